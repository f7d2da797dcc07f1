"""Exit codes of every `edgekv` command, named once (scripts rely on them)."""

OK = 0
ERROR = 1
USAGE = 2  # click's own code for bad options
NOT_FOUND = 3
UNAVAILABLE = 4
AUDIT_VIOLATIONS = 5

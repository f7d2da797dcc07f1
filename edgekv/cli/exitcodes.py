"""Exit codes of every `edgekv` command, named once (scripts rely on them)."""

OK = 0
ERROR = 1  # anything else: bad argument rejected by the node, bad cluster file, denied, ...
USAGE = 2  # click's own code for bad or missing options and arguments
NOT_FOUND = 3  # `get` of a key that is absent, deleted or expired
UNAVAILABLE = 4  # the node could not be reached, or did not answer within --timeout
AUDIT_VIOLATIONS = 5  # `audit` found keys stored where their placement forbids

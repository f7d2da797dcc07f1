"""Exit codes of every `edgekv` command, named once (scripts rely on them).

The messages behind them come from the SDK's one error mapping
(``edgekv.client._codec.error_from_rpc``), so the CLI and the SDK say the same.
"""

OK = 0
# Anything else: a bad argument rejected by the node (a value over max_value_bytes, a
# message over max_message_bytes), a bad cluster file, a missing or refused token, a
# denied call, an endpoint that does not serve the client API (a peer port), ...
ERROR = 1
# click's own code for bad or missing options and arguments, including an --endpoint
# that is not HOST:PORT (a URL scheme, no port, a bad port) and options after `--`.
USAGE = 2
NOT_FOUND = 3  # `get` of a key that is absent, deleted or expired
# The node could not be reached, or did not answer within --timeout; also when its TLS
# does not match the client's (the message says which side to change).
UNAVAILABLE = 4
AUDIT_VIOLATIONS = 5  # `audit` found keys stored where their placement forbids
# `put --if-absent` / `put|delete --if-version` whose condition did not hold at the key's
# home (nothing was written; the message gives the current version).
CONDITION_FAILED = 6

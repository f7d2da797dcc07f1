"""``python -m bench.compare``: see bench/compare/run.py."""

import sys

from bench.compare.run import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    print("interrupted: every server this run started is stopped", file=sys.stderr)
    sys.exit(130)

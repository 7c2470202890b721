"""`python -m hack.stack`: see hack/stack/cli.py."""

import sys

from hack.stack.cli import main

sys.exit(main())

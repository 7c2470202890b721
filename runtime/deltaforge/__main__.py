"""`python -m deltaforge` runs the same command line as the `deltaforge` script."""

import sys

from deltaforge.cli import main

sys.exit(main())

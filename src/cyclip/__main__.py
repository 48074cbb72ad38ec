"""`python -m cyclip` is the `cyclip` command."""

import sys

from cyclip.cli import main

sys.exit(main())

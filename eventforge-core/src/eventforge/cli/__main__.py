"""``python -m eventforge.cli``: the ``eventforge`` command."""

import sys

from . import main

sys.exit(main())

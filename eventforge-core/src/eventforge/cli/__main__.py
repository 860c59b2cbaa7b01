"""``python -m eventforge.cli``: the ``eventforge`` command."""

import sys

from eventforge.cli import main

sys.exit(main())

"""``python -m jacspec.cli``: the same as the ``jacspec`` command."""

import sys

from jacspec.cli.main import main

sys.exit(main())

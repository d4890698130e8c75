"""``python -m ichis_cli``: the same as the ``ichis`` command."""

import sys

from ichis_cli.main import main

sys.exit(main())

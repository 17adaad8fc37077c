"""``python -m fastgd``: the ``fastgd`` command (see :mod:`fastgd.cli`)."""

import sys

from .cli import main

sys.exit(main())

"""``python -m visionfm.cli``: the same as ``visionfm`` (and ``torchrun -m visionfm.cli``)."""

import sys

from . import main

sys.exit(main())

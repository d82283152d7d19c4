"""``python -m visionfm``: the same as the ``visionfm`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

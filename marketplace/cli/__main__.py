"""``python -m marketplace.cli``: the ``citybrain`` command."""

import sys

from marketplace.cli import app

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""``python -m nas.cli``: the same as the ``nas`` command."""
import sys

from nas.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn re-imports the main module
    sys.exit(main())

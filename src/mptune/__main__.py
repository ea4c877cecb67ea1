"""`python -m mptune ...` is the `mptune` command (and `torchrun ... -m mptune ...` launches it)."""

import sys

from mptune.cli import main

if __name__ == "__main__":
    sys.exit(main())

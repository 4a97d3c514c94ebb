"""`python -m bench` (from the repo root) runs every benchmark: see run_all.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_all import main  # noqa: E402

sys.exit(main(sys.argv[1:]))

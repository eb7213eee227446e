"""The command line: `python launch.py ...` (installed: `vae-launch ...`).

The launcher itself is `experiments/common/launch.py` (its docstring is the
help text); this file only runs it from a checkout.
"""

import shutil  # noqa: F401  (tests patch launch.shutil.which)
import sys

from experiments.common.launch import SEEDS_RESULTS  # noqa: F401
from experiments.common.launch import UsageError  # noqa: F401
from experiments.common.launch import _label  # noqa: F401
from experiments.common.launch import cli
from experiments.common.launch import main  # noqa: F401

if __name__ == '__main__':
  sys.exit(cli(sys.argv))

"""The command line: `python launch.py ...` (installed: `vae-launch ...`).

The launcher itself is `experiments/common/launch.py` (its docstring is the
help text); this file only runs it from a checkout.
"""

import sys

from experiments.common.launch import cli

if __name__ == '__main__':
  sys.exit(cli(sys.argv))

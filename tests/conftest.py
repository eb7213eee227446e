"""Test-suite set-up: JAX's persistent compilation cache, as launch.py uses it.

Programs compiled by an earlier test run (or an earlier `launch.py` run) load
from the cache instead of compiling again.
"""

from experiments.common import runner

runner.cache_compilations()

"""DVC stage entry points: one thin adapter per stage of dvc.yaml, run as ``python -m stages.<name>``."""

import sys

from stages.kernels import pin_from_argv

PINNED = pin_from_argv(sys.argv)  # before any stage module imports torch (stages/kernels.py)

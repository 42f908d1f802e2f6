"""DVC stage entry points: one thin adapter per stage of dvc.yaml, run as ``python -m stages.<name>``."""

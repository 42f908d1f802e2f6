"""Test helper, run by torchrun as a script: one DDP worker of a stage that records every output file it writes.

Usage: ``torchrun ... tests/stages/ddp_recorder.py <stage> <log folder> <stage arguments>``. Every output of a
stage is written atomically and lands through ``os.replace(tmp, path)`` (``smpq.artifacts``); the worker lists
those destinations in ``<log folder>/rank<RANK>.json`` when the stage ends, so a test can check who wrote.
"""

import importlib
import json
import os
import sys
from pathlib import Path


def main() -> None:
    stage, log_dir, *argv = sys.argv[1:]
    written: list[str] = []
    replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        written.append(str(dst))
        return replace(src, dst, *args, **kwargs)

    os.replace = recording_replace
    try:
        importlib.import_module(f"stages.{stage}").main(argv)
    finally:
        Path(log_dir, f"rank{os.environ['RANK']}.json").write_text(json.dumps(written))


if __name__ == "__main__":
    main()

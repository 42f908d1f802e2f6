"""Progress of long loops: a tqdm bar on a terminal, a log line with rate and ETA without one.

Under ``dvc repro`` or a scheduler stderr is not a terminal and tqdm switches itself off; the log line at
every tenth of the loop (``points``) is then the only sign of life. ``desc`` names the stage and method.
"""

from __future__ import annotations

import logging
import math
import time

from tqdm import tqdm

log = logging.getLogger("smpq.progress")


class Progress:
    """Count ``total`` units; ``update`` returns True at each of the ``points`` marks (10 %, 20 %, …)."""

    def __init__(self, total: int, desc: str, *, points: int = 10, unit: str = "step", bar: bool = True,
                 logger: logging.Logger = log):
        self.total, self.desc, self.unit, self.logger = max(int(total), 0), desc, unit, logger
        self.marks = sorted({math.ceil(k * self.total / points) for k in range(1, points + 1)} - {0})
        self.n = 0
        self.start = time.perf_counter()
        self.bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False, disable=None if bar else True)
        self.log_lines = self.bar.disable  # no terminal (or bar off): log lines instead

    def update(self, n: int = 1, **postfix: float) -> bool:
        """Advance by ``n``; on a mark, log a line (without a terminal) and return True."""
        before, self.n = self.n, self.n + n
        self.bar.update(n)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        hit = any(before < m <= self.n for m in self.marks)
        if hit and self.log_lines:
            self.logger.info("%s", self.line(postfix))
        return hit

    def line(self, postfix: dict[str, float] | None = None) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else float("inf")
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        extra = "".join(f", {k} {v:.4g}" for k, v in (postfix or {}).items())
        return (f"{self.desc}: {100 * self.n / max(self.total, 1):3.0f}% ({self.n}/{self.total} {self.unit}s), "
                f"{rate:.3g} {self.unit}s/s, elapsed {_clock(elapsed)}, ETA {_clock(eta)}{extra}")

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Counted:
    """A function whose calls (and batched ``many`` calls, if it has them) advance a ``Progress``
    (e.g. the Shapley game: one unit can take minutes of coalition evaluations)."""

    def __init__(self, fn, progress: Progress):
        self.fn, self.progress = fn, progress
        if hasattr(fn, "many"):  # keep the batched path (prefix reuse) available
            self.many = lambda items: self._count(fn.many(items), len(items))

    def __call__(self, item):
        return self._count(self.fn(item), 1)

    def _count(self, result, n: int):
        self.progress.update(n)
        return result


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"

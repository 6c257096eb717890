"""Progress for the GAN and label-factory commands: a tqdm bar on a terminal, otherwise one plain line
(``glomssl.engine.progress_line``) to stderr at most every ``every`` seconds and at the end, so logs of
unattended runs show how far they got."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``update(n)`` after each unit of work; ``close()`` at the end (prints the final line)."""

    def __init__(
        self, what: str, total: int, initial: int = 0, quiet: bool = False, every: float = 30.0
    ) -> None:
        self.what, self.total, self.done = what, total, initial
        self.quiet, self.every = quiet, every
        self.t0 = time.perf_counter()
        self.start = initial
        self.last = 0.0
        self.bar: Any = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="img", desc=what)

    def update(self, n: int = 1, **extra: Any) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet and time.perf_counter() - self.last >= self.every:
            self._line(**extra)

    def _line(self, **extra: Any) -> None:
        from glomssl.engine import progress_line

        self.last = time.perf_counter()
        line = progress_line(self.what, self.done - self.start, self.total - self.start, self.t0)
        extra_text = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{line} {extra_text}".rstrip(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.quiet and self.done > self.start:
            self._line()

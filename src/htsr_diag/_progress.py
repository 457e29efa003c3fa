"""A dependency-free progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["Progress", "progress"]


class Progress:
    """Minimal progress bar: ``with Progress(total, desc) as p: p.update(1, postfix="acc=0.9")``.

    ``enabled=None`` draws only when stderr is a TTY (so logs and CI stay clean).
    """

    def __init__(self, total: int | None, desc: str = "", *, enabled: bool | None = None,
                 min_interval: float = 0.2, stream=None):
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) if enabled is None else bool(enabled)
        self.min_interval = min_interval
        self.n = 0
        self.postfix = ""
        self._t0 = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last >= self.min_interval or (self.total is not None and self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._t0, 1e-9)
        rate = self.n / elapsed
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            text = f"\r{self.desc} [{bar}] {self.n}/{self.total} {rate:,.1f}/s eta {eta:,.0f}s {self.postfix}"
        else:
            text = f"\r{self.desc} {self.n} {rate:,.1f}/s {self.postfix}"
        self.stream.write(text[:160].ljust(80))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "",
             enabled: bool | None = None) -> Iterator[T]:
    """Wrap an iterable with a :class:`Progress` bar."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.update(1)

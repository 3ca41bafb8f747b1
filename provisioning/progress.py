"""Progress of a long host job (a build, filling the training cache, training) on one stderr line."""

from __future__ import annotations

import contextlib
import io
import sys
import time


class Progress:
    """One self-overwriting stderr line: count, rate, ETA (rate of the work done now).

    Args:
        total: how many units the whole job has.
        enabled: print at all.
        already: units done before this run (from a cache, a checkpoint).
        label: what is counted, e.g. ``embedding photos``.
        already_from: where the ``already`` units came from, e.g. ``the cache``.
    """

    def __init__(self, total: int, enabled: bool, already: int = 0, label: str = "embedding photos",
                 already_from: str = "the cache"):
        self.total, self.enabled, self.already, self.label = total, enabled, already, label
        self.already_from = already_from
        self.start, self.last = time.monotonic(), 0.0

    def update(self, done: int, final: bool = False, note: str = "") -> None:
        """Show ``done`` of ``total`` (at most 5 times a second unless ``final``), with ``note`` after it."""
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.2):
            return
        self.last = now
        rate = (done - self.already) / max(now - self.start, 1e-9)
        eta = f"ETA {(self.total - done) / rate:.0f}s" if rate > 0 and done < self.total else "done"
        cached = f", {self.already} from {self.already_from}" if self.already else ""
        note = f": {note}" if note else ""
        print(f"\r{self.label}: {done}/{self.total}{note} ({rate:.1f}/s{cached}, {eta})   ",
              end="\n" if final else "", file=sys.stderr, flush=True)


def chatter_away(progress: bool):
    """Send what the libraries print while loading and converting (weight loading,
    converter stages) to stderr with the progress lines, or nowhere when quiet:
    stdout is for the result table."""
    return contextlib.redirect_stdout(sys.stderr if progress else io.StringIO())

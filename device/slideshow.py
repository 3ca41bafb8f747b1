"""What the appliance is showing now: one query's results and the one in front.

The web UI, the front-panel button, the small display and the HDMI kiosk page
share one :class:`Slideshow`. A search in the web UI replaces its results; the
button steps through them (or, once they are used up or when nobody has
searched, runs the next saved query); the display and the kiosk page draw
:meth:`Slideshow.current`.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

#: Where the results being shown came from.
SOURCES = ("none", "web", "saved", "camera")


@dataclasses.dataclass(frozen=True)
class Showing:
    """A consistent snapshot of a :class:`Slideshow`.

    Attributes:
        query: the query whose results these are ("" when nothing was searched).
        results: :class:`device.search.Result` objects, best first.
        position: index of the result in front (0 when there are none).
        source: ``none``, ``web`` (someone searched), ``saved`` (the button ran a saved query) or
            ``camera`` (photos like what the camera saw, or a photo sent to search by).
        generation: grows by one on every change, so a viewer can tell it is out of date.
    """

    query: str
    results: tuple
    position: int
    source: str
    generation: int

    @property
    def current(self):
        """The result in front, or ``None`` when there are no results."""
        return self.results[self.position] if self.results else None

    @property
    def at_last(self) -> bool:
        """Whether the result in front is the last one (or there is none)."""
        return self.position >= len(self.results) - 1


class Slideshow:
    """The shared "current results" state; thread-safe.

    Listeners added with :meth:`listen` are called after every change.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._state = Showing(query="", results=(), position=0, source="none", generation=0)
        self._listeners: list[Callable[[Showing], None]] = []

    def listen(self, callback: Callable[[Showing], None]) -> None:
        """Call ``callback(showing)`` after every change, outside the lock (from the
        thread that made the change: keep it short, e.g. set an event)."""
        self._listeners.append(callback)

    def snapshot(self) -> Showing:
        """The state now."""
        with self._lock:
            return self._state

    def show(self, query: str, results, source: str) -> Showing:
        """Replace the results and put the first in front.

        Args:
            query: the query they answer.
            results: :class:`device.search.Result` objects, best first.
            source: ``web``, ``saved`` or ``camera`` (see :data:`SOURCES`).

        Raises:
            ValueError: an unknown ``source``.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown slideshow source {source!r}")
        with self._lock:
            self._state = Showing(query=query, results=tuple(results), position=0, source=source,
                                  generation=self._state.generation + 1)
            state = self._state
        self._notify(state)
        return state

    def advance(self, step: int = 1) -> Showing:
        """Put the next result (``step`` further, wrapping round) in front."""
        with self._lock:
            state = self._state
            if not state.results:
                return state
            self._state = dataclasses.replace(state, position=(state.position + step) % len(state.results),
                                              generation=state.generation + 1)
            state = self._state
        self._notify(state)
        return state

    def clear(self) -> Showing:
        """Forget the results (after a bundle reload their photos may be gone)."""
        with self._lock:
            self._state = Showing(query="", results=(), position=0, source="none",
                                  generation=self._state.generation + 1)
            state = self._state
        self._notify(state)
        return state

    def _notify(self, state: Showing) -> None:
        for callback in list(self._listeners):
            callback(state)

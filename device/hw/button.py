"""The front button: a short press and a long hold, told apart.

gpiozero calls ``when_held`` once the button has been down for ``hold_time``
and ``when_released`` when it comes up; a release that was not preceded by a
hold is a short press. Both callbacks run in gpiozero's own threads, so they
only hand the event on (the daemon's main loop does the work).
"""

from __future__ import annotations

import threading
from typing import Callable

#: The events a button reports.
PRESS = "press"
HOLD = "hold"


class FrontButton:
    """A gpiozero ``Button`` reporting :data:`PRESS` and :data:`HOLD` events.

    Args:
        pin: the pin name (``17``, ``GPIO17``, ``BOARD11``...).
        on_event: called with :data:`PRESS` or :data:`HOLD`, from gpiozero's thread.
        hold_time: seconds down before it counts as a hold.
        bounce_time: debounce in seconds (``0``: none).
        pull_up: the button shorts the pin to ground (internal pull-up).
        pin_factory: a gpiozero pin factory (default: gpiozero's).

    Raises:
        gpiozero.GPIOZeroError: the pin cannot be claimed (the caller reports it).
    """

    def __init__(self, pin: str, on_event: Callable[[str], None], hold_time: float = 3.0,
                 bounce_time: float = 0.05, pull_up: bool = True, pin_factory=None):
        from gpiozero import Button  # only when a button is configured

        self.pin = pin
        self._on_event = on_event
        self._lock = threading.Lock()
        self._was_held = False
        self._button = Button(pin, pull_up=pull_up, bounce_time=bounce_time or None, hold_time=hold_time,
                              pin_factory=pin_factory)
        self._button.when_pressed = self._pressed
        self._button.when_held = self._held
        self._button.when_released = self._released

    def _pressed(self) -> None:
        with self._lock:
            self._was_held = False

    def _held(self) -> None:
        with self._lock:
            self._was_held = True
        self._on_event(HOLD)

    def _released(self) -> None:
        with self._lock:
            held, self._was_held = self._was_held, False
        if not held:  # the release that ends a hold is not also a press
            self._on_event(PRESS)

    def close(self) -> None:
        """Release the pin."""
        self._button.close()

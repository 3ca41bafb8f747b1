"""The status light: one LED or an RGB LED showing what the appliance is doing.

=========  ==============================  ====================  =========================================
state      single LED                      RGB LED               when
=========  ==============================  ====================  =========================================
starting   slow blink (0.5 s on, 0.5 off)  blue, slow blink      from start-up until the bundle is served
ready      on                              green                 serving; waiting for a search or a press
searching  quick blink (0.1 s on, 0.1 off) white, quick blink    for 0.4 s after a search starts
error      short flash (0.1 s on, 0.9 off) red, short flash      a saved query, reload or the shutdown
                                                                 command failed; until the next success
off        off                             off                   stopped, or shutting down
=========  ==============================  ====================  =========================================

gpiozero runs blinks in its own background thread, so a pattern keeps going
while the daemon's main loop waits.
"""

from __future__ import annotations

import dataclasses

#: The states, in the order the table above lists them.
STATES = ("starting", "ready", "searching", "error", "off")


@dataclasses.dataclass(frozen=True)
class Pattern:
    """How one state looks.

    Attributes:
        on_time, off_time: blink timing in seconds; ``off_time == 0`` means
            steadily on, ``on_time == 0`` steadily off.
        color: (red, green, blue), each 0 or 1, for an RGB LED.
    """

    on_time: float
    off_time: float
    color: tuple[int, int, int]


PATTERNS = {
    "starting": Pattern(0.5, 0.5, (0, 0, 1)),
    "ready": Pattern(1.0, 0.0, (0, 1, 0)),
    "searching": Pattern(0.1, 0.1, (1, 1, 1)),
    "error": Pattern(0.1, 0.9, (1, 0, 0)),
    "off": Pattern(0.0, 1.0, (0, 0, 0)),
}


class StatusLight:
    """A gpiozero ``LED`` (one pin) or ``RGBLED`` (three pins) showing :data:`STATES`.

    Args:
        pins: one pin name, or three (red, green, blue).
        active_high: the LED lights when its pin is high.
        pin_factory: a gpiozero pin factory (default: gpiozero's, e.g. from
            ``GPIOZERO_PIN_FACTORY``).

    Raises:
        gpiozero.GPIOZeroError: the pins cannot be claimed (the caller reports it).
    """

    def __init__(self, pins: tuple[str, ...], active_high: bool = True, pin_factory=None):
        from gpiozero import LED, RGBLED  # only when an LED is configured

        self.pins = pins
        if len(pins) == 3:
            # pwm=False: plain on/off channels work with every pin library (and MockFactory).
            self._led = RGBLED(*pins, active_high=active_high, pwm=False, pin_factory=pin_factory)
        else:
            self._led = LED(pins[0], active_high=active_high, pin_factory=pin_factory)
        self.state: str | None = None

    @property
    def is_rgb(self) -> bool:
        """Whether this is an RGB LED."""
        return len(self.pins) == 3

    def show(self, state: str) -> None:
        """Switch to the pattern of ``state`` (a no-op if it is already showing).

        Raises:
            ValueError: ``state`` is not one of :data:`STATES`.
        """
        if state not in PATTERNS:
            raise ValueError(f"unknown light state {state!r}; expected one of {', '.join(STATES)}")
        if state == self.state:
            return  # restarting a blink would make it stutter
        self.state = state
        pattern = PATTERNS[state]
        led = self._led
        if pattern.on_time == 0:
            led.off()
        elif pattern.off_time == 0:
            if self.is_rgb:
                led.color = pattern.color
            else:
                led.on()
        elif self.is_rgb:
            led.blink(on_time=pattern.on_time, off_time=pattern.off_time, on_color=pattern.color,
                      off_color=(0, 0, 0), background=True)
        else:
            led.blink(on_time=pattern.on_time, off_time=pattern.off_time, background=True)

    def close(self) -> None:
        """Turn the LED off and release its pins."""
        try:
            self._led.off()
        finally:
            self._led.close()

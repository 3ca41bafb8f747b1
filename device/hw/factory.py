"""The hardware seam: what the daemon drives, and the one function that builds it.

:func:`open_hardware` reads :class:`HardwareOptions` and returns either a
:class:`GpioHardware` (gpiozero button and LED, luma display: whichever parts
are configured and found) or a :class:`NullHardware` when there are none. It
logs one line naming what it did not find. A part that is configured but
absent (not a Pi, no display on the bus, luma not installed) is left out
with a warning and the daemon serves without it; a setting that cannot be
meant (a pin name gpiozero does not know, a bad size) stops start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import shutil
from typing import Callable

from device.errors import CameraUnavailable, HardwareInvalid
from device.hw.display import MODELS, Display, Screen, create_device, parse_i2c_address, parse_size

log = logging.getLogger("glimpse.hw")


@dataclasses.dataclass
class HardwareOptions:
    """The front-panel settings, parsed (see ``docs/kiosk.md``).

    Attributes:
        button_pin: pin name of the button, or ``""``.
        hold_time, bounce_time, pull_up: button behaviour (seconds, seconds, wiring).
        led_pins: one pin (LED) or three (RGB LED), or ``()``.
        led_active_high: the LED lights when its pin is high.
        display: a model of :data:`device.hw.display.MODELS`, or ``""``.
        display_size, display_rotate: pixels and quarter turns.
        i2c_address, spi_device, dc_pin, reset_pin: where the display is wired.
        fps: most display frames per second.
        shutdown_argv: the command run on a hold, or ``()``.
        saved_queries: the "surprise me" queries (run with :meth:`device.daemon.Daemon.show`, which
            keeps ``slideshow_results`` of each).
        camera: a model of :data:`device.hw.camera.MODELS`, or ``""``.
        hold_action: what a hold does: ``shutdown``, ``camera`` or ``auto`` (camera when there is one).
    """

    button_pin: str = ""
    hold_time: float = 3.0
    bounce_time: float = 0.05
    pull_up: bool = True
    led_pins: tuple[str, ...] = ()
    led_active_high: bool = True
    display: str = ""
    display_size: tuple[int, int] = (0, 0)
    display_rotate: int = 0
    i2c_address: int = 0x3C
    spi_device: int = 0
    dc_pin: int = 24
    reset_pin: int = 25
    fps: float = 2.0
    shutdown_argv: tuple[str, ...] = ()
    saved_queries: tuple[str, ...] = ()
    camera: str = ""
    hold_action: str = "auto"

    @classmethod
    def from_settings(cls, settings) -> "HardwareOptions":
        """Parse the front-panel rows of the settings table.

        Raises:
            HardwareInvalid: a value that cannot be meant, naming its key.
        """
        led = tuple(p.strip() for p in settings.led_pin.split(",") if p.strip())
        if len(led) not in (0, 1, 3):
            raise HardwareInvalid(f"setting led_pin: {settings.led_pin!r} names {len(led)} pins; "
                                  "give one (LED) or three, red,green,blue (RGB LED)")
        try:
            argv = tuple(shlex.split(settings.shutdown_command))
        except ValueError as exc:
            raise HardwareInvalid(f"setting shutdown_command: {settings.shutdown_command!r}: {exc}") from None
        if argv and shutil.which(argv[0]) is None:
            # Found out now rather than when someone holds the button to power off.
            raise HardwareInvalid(f"setting shutdown_command: the program {argv[0]!r} is not found "
                                  "(give its full path, e.g. /usr/bin/systemctl poweroff)")
        display = "" if settings.display == "none" else settings.display
        return cls(
            button_pin=settings.button_pin.strip(), hold_time=settings.button_hold_time,
            bounce_time=settings.button_bounce_time, pull_up=settings.button_pull_up,
            led_pins=led, led_active_high=settings.led_active_high, display=display,
            display_size=parse_size(settings.display_size, display) if display else (0, 0),
            display_rotate=settings.display_rotate, i2c_address=parse_i2c_address(settings.display_i2c_address),
            spi_device=settings.display_spi_device, dc_pin=settings.display_dc_pin,
            reset_pin=settings.display_reset_pin, fps=settings.display_fps, shutdown_argv=argv,
            saved_queries=split_queries(settings.saved_queries),
            camera="" if settings.camera == "none" else settings.camera, hold_action=settings.button_hold,
        )


def split_queries(text: str) -> tuple[str, ...]:
    """Saved queries from one setting: separated by ``|``, or by commas when there is no ``|``."""
    parts = text.split("|") if "|" in text else text.split(",")
    return tuple(p.strip() for p in parts if p.strip())


class Hardware:
    """The seam: the parts the daemon drives. This base class has none and does nothing.

    Attributes:
        has_button, has_light, has_display: which parts exist.
    """

    has_button = False
    has_light = False
    has_display = False
    has_camera = False

    def light(self, state: str) -> None:
        """Show ``state`` (see :mod:`device.hw.light`) on the status light, if any."""

    def screen(self, screen: Screen) -> None:
        """Ask the display, if any, to show ``screen`` (drawn by :meth:`poll`)."""

    def poll(self) -> float | None:
        """Do due work (a rate-limited redraw); return seconds until more is due, or ``None``."""
        return None

    def capture(self):
        """Take a photo with the camera: a PIL image.

        Raises:
            CameraUnavailable: there is no camera, or it failed.
        """
        raise CameraUnavailable("this device has no camera (setting camera = picamera2, with the camera "
                                "module connected and python3-picamera2 installed)")

    def describe(self) -> dict:
        """The parts found, for ``/api/status``."""
        return {}

    def close(self, screen: Screen | None = None) -> None:
        """Light off, leave ``screen`` on the display, release every pin and bus."""


class NullHardware(Hardware):
    """No button, light or display: every call does nothing."""


class GpioHardware(Hardware):
    """Real parts: any of a :class:`~device.hw.button.FrontButton`, a
    :class:`~device.hw.light.StatusLight` and a :class:`~device.hw.display.Display`."""

    def __init__(self, button=None, status_light=None, display: Display | None = None, camera=None):
        self.button = button
        self.status_light = status_light
        self.display = display
        self.camera = camera
        self.has_button = button is not None
        self.has_light = status_light is not None
        self.has_display = display is not None
        self.has_camera = camera is not None

    def capture(self):
        if self.camera is None:
            return super().capture()
        return self.camera.capture()

    def light(self, state: str) -> None:
        if self.status_light is not None:
            self.status_light.show(state)

    def screen(self, screen: Screen) -> None:
        if self.display is not None:
            self.display.show(screen)

    def poll(self) -> float | None:
        return self.display.poll() if self.display is not None else None

    def describe(self) -> dict:
        found = {}
        if self.button is not None:
            found["button"] = self.button.pin
        if self.status_light is not None:
            found["light"] = ",".join(self.status_light.pins)
        if self.display is not None:
            found["display"] = self.display.name
        if self.camera is not None:
            found["camera"] = self.camera.name
        return found

    def close(self, screen: Screen | None = None) -> None:
        for part, closing in ((self.status_light, lambda p: p.close()), (self.button, lambda p: p.close()),
                              (self.display, lambda p: p.close(screen)), (self.camera, lambda p: p.close())):
            if part is None:
                continue
            try:
                closing(part)
            except Exception as exc:  # one stuck part must not keep the others from closing
                log.warning("closing %s: %s", type(part).__name__, exc)


def open_hardware(options: HardwareOptions, on_event: Callable[[str], None], *, pin_factory=None,
                  display_device=None, clock=None, camera_device=None) -> Hardware:
    """Build the front panel from ``options``; log one line about what is missing.

    Args:
        options: parsed settings.
        on_event: receives the button's ``press``/``hold`` (from gpiozero's thread).
        pin_factory: a gpiozero pin factory (default: gpiozero's own choice,
            e.g. ``GPIOZERO_PIN_FACTORY=mock``).
        display_device: a luma device to use instead of opening ``options.display``
            (tests pass ``luma.core.device.dummy``).
        clock: monotonic clock for the display's frame limiter (tests inject one).
        camera_device: a camera to use instead of opening ``options.camera``
            (tests pass a :class:`~device.hw.camera.MockCamera`).

    Raises:
        HardwareInvalid: gpiozero does not know a configured pin name.
    """
    missing: list[str] = []  # parts not configured
    absent: list[str] = []   # parts configured but not found
    button = status_light = display = None
    if options.button_pin:
        button = _gpio_part("button", options.button_pin, absent, lambda: _button(options, on_event, pin_factory))
    else:
        missing.append("no button (button_pin is not set)")
    if options.led_pins:
        status_light = _gpio_part("status LED", ",".join(options.led_pins), absent,
                                  lambda: _light(options, pin_factory))
    else:
        missing.append("no status LED (led_pin is not set)")
    if display_device is not None or options.display:
        display = _display(options, display_device, clock, absent)
    else:
        missing.append("no display (display is none)")
    camera = camera_device
    if camera is None and options.camera:
        camera = _camera(options, absent)
    if missing or absent:
        # One line says what the front panel did not find; a warning if it was configured.
        parts = absent + missing
        log.log(logging.WARNING if absent else logging.INFO, "front panel: %s; serving without %s",
                ", ".join(parts), "them" if len(parts) > 1 else "it")
    if button is None and status_light is None and display is None and camera is None:
        return NullHardware()
    return GpioHardware(button, status_light, display, camera)


def _camera(options, absent: list[str]):
    """The configured camera, or ``None`` with the reason added to ``absent``."""
    from device.hw.camera import PiCamera

    try:
        return PiCamera()
    except ImportError:
        absent.append("no camera (picamera2 is not installed: sudo apt install python3-picamera2, and create "
                      "the venv with --system-site-packages)")
    except Exception as exc:  # libcamera: RuntimeError, IndexError when no camera is connected
        absent.append(f"no camera ({type(exc).__name__}: {exc})")
    return None


def _button(options, on_event, pin_factory):
    from device.hw.button import FrontButton

    return FrontButton(options.button_pin, on_event, hold_time=options.hold_time,
                       bounce_time=options.bounce_time, pull_up=options.pull_up, pin_factory=pin_factory)


def _light(options, pin_factory):
    from device.hw.light import StatusLight

    return StatusLight(options.led_pins, active_high=options.led_active_high, pin_factory=pin_factory)


def _gpio_part(what: str, pins: str, absent: list[str], build):
    """``build()``, or ``None`` with the reason added to ``absent`` when the GPIO is not there."""
    try:
        import gpiozero
    except ImportError:
        absent.append(f"no {what} on {pins} (gpiozero is not installed)")
        return None
    try:
        return build()
    except (gpiozero.PinInvalidPin, gpiozero.PinInvalidPull) as exc:
        setting = "button_pin" if what == "button" else "led_pin"
        raise HardwareInvalid(f"setting {setting}: {pins!r}: {exc}") from None
    except gpiozero.BadPinFactory:
        absent.append(f"no {what} on {pins} (no GPIO here: no pin library could open the GPIO chip)")
    except (gpiozero.GPIOZeroError, OSError) as exc:
        absent.append(f"no {what} on {pins} ({exc})")
    return None


def _display(options, device, clock, absent: list[str]) -> Display | None:
    import time

    clock = clock or time.monotonic
    if device is not None:
        return Display(device, options.fps, clock)
    name = f"{options.display} {options.display_size[0]}x{options.display_size[1]}"
    bus = MODELS[options.display][2]
    where = f"I2C 0x{options.i2c_address:02X}" if bus == "i2c" else f"SPI CE{options.spi_device}"
    try:
        device = create_device(options.display, options.display_size, options.display_rotate,
                               options.i2c_address, options.spi_device, options.dc_pin, options.reset_pin)
    except ImportError as exc:
        absent.append(f"no {name} display ({exc.name or 'luma'} is not installed: "
                      "pip install 'glimpse[hardware]')")
        return None
    except Exception as exc:  # luma.core.error.Error, OSError, RuntimeError from the GPIO library
        absent.append(f"no {name} display on {where} ({type(exc).__name__}: {exc})")
        return None
    return Display(device, options.fps, clock, name=name)

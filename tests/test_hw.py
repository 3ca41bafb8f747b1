"""The front panel with gpiozero's MockFactory and luma's dummy display.

The test is the hardware: it drives the button's pin low and high, reads the
LED's pin history and looks at the frames the display received. It also plays
the daemon's main loop: it waits (bounded) for the panel to be woken, then
calls :meth:`Panel.tick`.
"""

from __future__ import annotations

import logging
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from luma.core.device import dummy
from PIL import Image, ImageOps, ImageStat

from conftest import REPO
from device import settings
from device.daemon import Daemon
from device.errors import GlimpseError, HardwareInvalid
from device.hw import HardwareOptions, NullHardware, open_hardware
from device.hw.display import Display, FrameLimiter, Screen, layout, render
from device.hw.factory import split_queries
from device.hw.panel import SEARCH_FLASH_SECONDS, Panel
from device.search import Searcher
from device.web import create_app

ARTIFACTS = REPO / "tests" / "artifacts"
BUTTON, LED_PIN, RGB = 17, 27, (5, 6, 13)


@pytest.fixture(scope="module")
def searcher(bundle_dir):
    with Searcher.from_bundle(bundle_dir, verify="quick") as searcher:
        yield searcher


@pytest.fixture
def factory():
    """gpiozero's MockFactory as the default pin factory; the test drives its pins."""
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.close()
    Device.pin_factory = None


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """A daemon with its bundle loaded and a panel on mock pins and a dummy display."""

    def __init__(self, searcher, clock=None, display=(128, 64, "1"), **overrides):
        values = {"bundle": str(searcher.bundle.path), "button_pin": str(BUTTON), "led_pin": str(LED_PIN),
                  "button_hold_time": 0.05, "button_bounce_time": 0.02,
                  "saved_queries": "a cup of coffee|a cat|a rocket", "slideshow_results": 3}
        values.update(overrides)
        self.daemon = Daemon(settings.load(values, env={}))
        self.daemon._install(searcher)
        self.woken = threading.Event()
        self.clock = clock or Clock()
        self.device = dummy(width=display[0], height=display[1], mode=display[2]) if display else None
        self.panel = Panel(self.daemon, HardwareOptions.from_settings(self.daemon.settings), wake=self.woken.set,
                           clock=self.clock, address=lambda: "192.168.1.20:8080", display_device=self.device)
        self.daemon.panel = self.panel  # as Daemon.serve does: reloads report to it
        self.panel.post("ready")
        self.later()

    def pin(self, number):
        return Device.pin_factory.pin(number)

    def later(self, seconds: float = 1.0) -> None:
        """Let ``seconds`` pass on the panel's clock (blinks end, held-back frames are due) and tick."""
        self.clock.now += seconds
        self.woken.clear()
        self.panel.tick()

    def settle(self, actions: int, timeout: float = 5.0) -> None:
        """Play the main loop until the panel has taken ``actions`` actions in all (bounded)."""
        deadline = time.monotonic() + timeout
        while len(self.panel.actions) < actions:
            assert self.woken.wait(max(0.0, deadline - time.monotonic())), \
                f"the panel was not woken; actions so far {self.panel.actions}"
            self.woken.clear()
            self.panel.tick()
        self.later()  # what the action changed (the slideshow) is drawn

    def press(self) -> None:
        button = self.pin(BUTTON)
        before = len(self.panel.actions)
        button.drive_low()
        button.drive_high()
        self.settle(before + 1)

    def close(self):
        self.panel.close()


@pytest.fixture
def rig(searcher, factory):
    rigs = []

    def make(**kwargs) -> Rig:
        rigs.append(Rig(searcher, **kwargs))
        return rigs[-1]
    yield make
    for made in rigs:
        made.close()


def _wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    """Poll ``predicate`` until true, at most ``timeout`` seconds (hardware threads move on their own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _stays(predicate, seconds: float) -> None:
    """Assert ``predicate`` holds throughout ``seconds`` (watching that nothing happens takes time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(0.01)


def _save(image: Image.Image, name: str, scale: int = 4) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)
    return path


# --- the button ------------------------------------------------------------------------


def test_presses_run_the_saved_queries_in_turn_when_nobody_has_searched(rig):
    r = rig()
    shown = []
    for _ in range(4):
        r.press()
        showing = r.daemon.slideshow.snapshot()
        assert showing.source == "saved"
        shown.append((showing.query, showing.current.item.path))
    assert shown == [("a cup of coffee", "kitchen/coffee.png"), ("a cat", "pets/cat.png"),
                     ("a rocket", "space/rocket.jpg"), ("a cup of coffee", "kitchen/coffee.png")]
    assert r.panel.actions[-1] == ("saved", "a cup of coffee")
    assert r.daemon.metrics.queries.labels(kind="saved")._value.get() == 4


def test_after_show_on_the_screen_presses_step_through_its_results_then_surprise(rig):
    r = rig()
    client = create_app(r.daemon).test_client()
    assert client.post("/api/admin/show", json={"q": "space"}).status_code == 200
    web = r.daemon.slideshow.snapshot()
    assert web.source == "web" and web.query == "space" and len(web.results) == 3  # slideshow_results
    r.panel.tick()
    seen = [r.daemon.slideshow.snapshot().current.item.id]
    for _ in range(2):
        r.press()
        seen.append(r.daemon.slideshow.snapshot().current.item.id)
    assert seen == [res.item.id for res in web.results]
    assert r.panel.actions[-2:] == [("advanced", 1), ("advanced", 2)]
    r.press()  # past the last web result: the next saved query
    after = r.daemon.slideshow.snapshot()
    assert (after.source, after.query) == ("saved", "a cup of coffee")


def test_searches_leave_the_screen_alone_until_shown_on_it(rig):
    r = rig()
    client = create_app(r.daemon).test_client()
    client.get("/api/search?q=a+cat&k=5")
    client.get("/api/search?q=a+cat&k=5&show=1")  # what the web UI's instant search sent before
    assert client.get("/?q=a+cat").status_code == 200
    assert r.daemon.slideshow.snapshot().source == "none"  # nobody's search takes over the screen
    client.post("/api/admin/show", json={"q": "a cat"})
    showing = r.daemon.slideshow.snapshot()
    assert showing.query == "a cat" and showing.current.item.path == "pets/cat.png"
    assert r.daemon.metrics.queries.labels(kind="text")._value.get() == 4


def test_surprise_runs_the_next_saved_query_even_while_web_results_are_shown(rig):
    # Home Assistant's "Surprise me" button (device/home_assistant.py) posts "surprise".
    r = rig()
    client = create_app(r.daemon).test_client()
    assert client.post("/api/admin/show", json={"q": "space"}).status_code == 200
    r.panel.post("surprise")
    r.settle(len(r.panel.actions) + 1)
    after = r.daemon.slideshow.snapshot()
    assert (after.source, after.query, after.current.item.path) == ("saved", "a cup of coffee", "kitchen/coffee.png")
    assert r.panel.actions[-1] == ("saved", "a cup of coffee")
    empty = rig(saved_queries="")
    empty.panel.post("surprise")
    empty.settle(len(empty.panel.actions) + 1)
    assert empty.panel.actions[-1] == ("nothing",) and empty.daemon.slideshow.snapshot().source == "none"


def test_without_saved_queries_presses_go_round_the_results(rig):
    r = rig(saved_queries="")
    r.press()
    assert r.panel.actions[-1] == ("nothing",)
    create_app(r.daemon).test_client().post("/api/admin/show", json={"q": "space"})
    positions = []
    for _ in range(3):
        r.press()
        positions.append(r.daemon.slideshow.snapshot().position)
    assert positions == [1, 2, 0]


def test_hold_runs_the_shutdown_command_and_the_release_is_not_a_press(rig, tmp_path):
    marker = tmp_path / "shutdown-requested"
    command = shlex.join([sys.executable, "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('bye')",
                          str(marker)])
    r = rig(shutdown_command=command)
    button = r.pin(BUTTON)
    button.drive_low()
    r.settle(1)  # woken by gpiozero's hold thread after button_hold_time
    assert r.panel.actions == [("shutdown", tuple(shlex.split(command)))]
    # exists() alone could catch the file between its creation and the write
    _wait_until(lambda: marker.exists() and marker.read_text() == "bye", what="the shutdown command to run")
    assert r.pin(LED_PIN).state == 0  # the light goes off while shutting down
    button.drive_high()  # gpiozero calls when_released in this thread: nothing to wait for
    r.later()
    assert len(r.panel.actions) == 1  # the release that ends a hold is not a press
    assert r.daemon.metrics.button.labels(event="hold")._value.get() == 1
    assert r.daemon.metrics.button.labels(event="press")._value.get() == 0


def test_hold_does_nothing_unless_a_shutdown_command_is_set(rig, tmp_path):
    r = rig()
    button = r.pin(BUTTON)
    button.drive_low()
    r.settle(1)
    button.drive_high()
    r.later()
    assert r.panel.actions == [("hold-ignored",)]
    assert r.pin(LED_PIN).state == 1  # still ready


def test_debounce_and_hold_time_reach_the_pin(rig):
    # MockPin records bounce but does not filter edges (lgpio does, on the Pi):
    # check that the settings get there.
    r = rig(button_bounce_time=0.07, button_hold_time=0.3)
    button = r.panel.hardware.button._button
    assert r.pin(BUTTON).bounce == pytest.approx(0.07)
    assert button.hold_time == pytest.approx(0.3)
    assert r.pin(BUTTON).pull == "up"


# --- the status light ---------------------------------------------------------------------


def _changes(pin) -> list[bool]:
    return [s.state for s in pin.states[1:]]


def test_light_blinks_while_starting_is_on_when_ready_and_flickers_while_searching(searcher, factory):
    clock = Clock()
    daemon = Daemon(settings.load({"bundle": str(searcher.bundle.path), "led_pin": str(LED_PIN),
                                   "button_pin": str(BUTTON), "saved_queries": "a cat"}, env={}))
    daemon._install(searcher)
    woken = threading.Event()
    panel = Panel(daemon, HardwareOptions.from_settings(daemon.settings), wake=woken.set, clock=clock,
                  address=lambda: "")
    led = Device.pin_factory.pin(LED_PIN)
    try:
        # starting: a slow blink (0.5 s on, 0.5 s off): on, then off, then on again.
        _wait_until(lambda: _changes(led)[:3] == [True, False, True], timeout=3, what="the starting blink")
        panel.post("ready")
        panel.tick()
        assert led.state == 1  # ready: on...
        led.clear_states()
        _stays(lambda: len(led.states) == 1, 0.6)  # ...steadily (longer than a blink's half period)
        # a press runs a search: quick blinks, then steady again once the flash is over
        button = Device.pin_factory.pin(BUTTON)
        button.drive_low()
        button.drive_high()
        assert woken.wait(5)
        panel.tick()
        _wait_until(lambda: _changes(led).count(False) >= 2, timeout=3, what="the searching flicker")
        clock.now += SEARCH_FLASH_SECONDS + 0.01
        panel.tick()
        assert led.state == 1
        settled = len(led.states)
        # error: a short flash every second until the next success
        panel.post("error")
        panel.tick()
        _wait_until(lambda: _changes(led)[settled - 1:][:1] == [False], timeout=3, what="the error flash")
        panel.post("ready")
        panel.tick()
        assert led.state == 1
    finally:
        panel.close()
    assert led.state == 0  # closed: off


def test_rgb_light_is_green_white_while_searching_and_red_after_a_refused_reload(rig):
    r = rig(led_pin=",".join(map(str, RGB)), display=None)
    red, green, blue = (r.pin(n) for n in RGB)
    assert (red.state, green.state, blue.state) == (0, 1, 0)  # ready: green
    assert r.panel.describe()["light_state"] == "ready"
    create_app(r.daemon).test_client().post("/api/admin/show", json={"q": "a cat"})  # Show on the screen
    r.panel.tick()
    assert r.panel.describe()["light_state"] == "searching"
    _wait_until(lambda: red.state == green.state == blue.state == 1, timeout=3, what="white")
    r.later()
    assert (red.state, green.state, blue.state) == (0, 1, 0)
    with pytest.raises(GlimpseError):
        r.daemon.reload("no-such-bundle")
    r.panel.tick()
    assert r.panel.describe()["light_state"] == "error"
    _wait_until(lambda: red.state == 1 and green.state == 0, timeout=3, what="red")
    assert blue.state == 0


# --- the display -------------------------------------------------------------------------


def _mean(image: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(image.convert("RGB")).mean)


@pytest.mark.parametrize("width, height, mode, model", [
    (128, 64, "1", "ssd1306"), (160, 128, "RGB", "st7735"), (320, 240, "RGB", "ili9341")])
def test_display_shows_the_address_query_and_a_thumbnail_of_the_result(rig, width, height, mode, model):
    r = rig(display=(width, height, mode))
    scale = 4 if width < 200 else 2
    starting = render(Screen(address="192.168.1.20:8080", note="Starting"), (width, height), mode)
    _save(starting, f"display-{model}-{width}x{height}-starting.png", scale)
    # Serving, nothing searched yet: the status screen (address, photo count, bundle id).
    status = r.device.image
    _save(status, f"display-{model}-{width}x{height}-status.png", scale)
    assert status.tobytes() == render(Screen(
        address="192.168.1.20:8080", bundle_id=r.daemon.searcher.bundle.id, items=8,
        caption="Press for a surprise"), (width, height), mode).tobytes()
    header = layout((width, height), mode).header
    assert _mean(status.crop((0, header, width, height)))[0] > 5  # the status lines are drawn
    r.press()
    frame = r.device.image
    assert frame is not None and frame.size == (width, height) and frame.mode == mode
    path = _save(frame, f"display-{model}-{width}x{height}-result.png", scale)
    assert path.exists()
    place = layout((width, height), mode)
    left, top, right, bottom = place.thumb
    # The address line is drawn.
    assert _mean(frame.crop((0, 0, width, place.header - 2)))[0] > 5
    # Text beside the thumbnail (query, position, photo count).
    assert _mean(frame.crop((right + 1, place.header, width, height)))[0] > 5
    # The thumbnail is the coffee photo's: same average colour (mono: same lit fraction).
    current = r.daemon.slideshow.snapshot().current
    assert current.item.path == "kitchen/coffee.png"
    with Image.open(r.daemon.searcher.bundle.file(current.item.thumb)) as thumb:
        expected = _mean(ImageOps.fit(thumb.convert("RGB"), (right - left, bottom - top)))
    got = _mean(frame.crop(place.thumb))
    if mode == "1":
        luminance = (0.299 * expected[0] + 0.587 * expected[1] + 0.114 * expected[2])
        assert abs(got[0] - luminance) < 25  # dithering keeps the mean brightness
    else:
        assert all(abs(g - e) < 8 for g, e in zip(got, expected)), (got, expected)
    # Another result: another picture.
    before = frame.tobytes()
    r.daemon.slideshow.advance()
    r.later()
    assert r.device.image.tobytes() != before


def test_display_frames_are_rate_limited_and_the_latest_screen_wins():
    clock = Clock()
    device = dummy(width=128, height=64, mode="1")
    display = Display(device, fps=2.0, clock=clock)
    first, second, third = (Screen(address="10.0.0.1:8080", query=q) for q in ("one", "two", "three"))
    display.show(first)
    assert display.poll() is None and display.frames == 1
    clock.now += 0.1
    display.show(second)
    assert display.poll() == pytest.approx(0.4) and display.frames == 1  # held back
    clock.now += 0.1
    display.show(third)  # replaces the one held back
    assert display.poll() == pytest.approx(0.3)
    clock.now += 0.3
    assert display.poll() is None and display.frames == 2
    assert device.image.tobytes() == render(third, (128, 64), "1").tobytes()
    assert display.poll() is None and display.frames == 2  # nothing pending: no frame


def test_frame_limiter_allows_fps_frames_a_second():
    clock = Clock()
    limiter = FrameLimiter(4.0, clock)
    allowed = 0
    for _ in range(100):  # one second in steps of 10 ms
        allowed += limiter.try_frame()
        clock.now += 0.01
    assert allowed == 4
    with pytest.raises(ValueError):
        FrameLimiter(0, clock)


def test_closing_leaves_a_last_screen(rig):
    r = rig()
    r.panel.close()
    assert r.device.image is not None
    _save(r.device.image, "display-ssd1306-128x64-stopped.png")
    assert r.device.image.getbbox() is not None  # "Stopped" is drawn


# --- the seam -----------------------------------------------------------------------------


def test_nothing_configured_gives_null_hardware_and_one_log_line(caplog):
    options = HardwareOptions.from_settings(settings.load({}, env={}))
    with caplog.at_level(logging.INFO, logger="glimpse.hw"):
        hardware = open_hardware(options, lambda event: None)
    assert isinstance(hardware, NullHardware)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["front panel: no button (button_pin is not set), no status LED (led_pin is not set), "
                     "no display (display is none); serving without them"]


def test_configured_but_absent_hardware_is_left_out_with_a_warning(caplog, monkeypatch):
    Device.pin_factory = None
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-pin-library")
    options = HardwareOptions.from_settings(settings.load({"button_pin": "17", "display": "ssd1306"}, env={}))
    with caplog.at_level(logging.INFO, logger="glimpse.hw"):
        hardware = open_hardware(options, lambda event: None)
    Device.pin_factory = None
    assert isinstance(hardware, NullHardware)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "no button on 17 (no GPIO here" in record.getMessage()
    assert "no ssd1306 128x64 display on I2C 0x3C" in record.getMessage()


@pytest.mark.parametrize("key, value, message", [
    ("led_pin", "5,6", "names 2 pins"),
    ("shutdown_command", "systemctl 'poweroff", "shutdown_command"),
    ("shutdown_command", "/no/such/poweroff --now", "'/no/such/poweroff' is not found"),
    ("display_size", "128by64", "WIDTHxHEIGHT"),
    ("display_i2c_address", "0x99", "7-bit I2C address"),
])
def test_settings_that_cannot_be_meant_stop_start_up(key, value, message):
    with pytest.raises(HardwareInvalid, match=message):
        HardwareOptions.from_settings(settings.load({key: value, "display": "ssd1306"}, env={}))


def test_an_unknown_pin_name_stops_start_up(factory):
    options = HardwareOptions.from_settings(settings.load({"button_pin": "GPIO99"}, env={}))
    with pytest.raises(HardwareInvalid, match="button_pin"):
        open_hardware(options, lambda event: None)


def test_saved_queries_split_on_bars_or_commas():
    assert split_queries("a dog, on a beach|the sea") == ("a dog, on a beach", "the sea")
    assert split_queries("cats, dogs ,, birds") == ("cats", "dogs", "birds")
    assert split_queries("  ") == ()


# --- the daemon ---------------------------------------------------------------------------


def _serve(tmp_path, bundle_dir, extra_env: dict, *args: str):
    """Run ``glimpse serve`` until READY, return its /api/status and its log after SIGTERM."""
    import json
    import os
    import signal
    import subprocess
    import urllib.request

    from test_daemon import Notifications, _free_port

    port = _free_port()
    notifications = Notifications(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(notifications.path), GLIMPSE_CONFIG=str(tmp_path / "none.conf"),
               **extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--port", str(port), "--bundle",
                             str(bundle_dir), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        notifications.wait_for("READY=1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=30) as response:
            status = json.load(response)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notifications.close()
        log = proc.stderr.read()
        proc.stderr.close()
    return status, log


def test_daemon_without_hardware_logs_one_line_and_serves(tmp_path, bundle_dir):
    status, log = _serve(tmp_path, bundle_dir, {})
    lines = [line for line in log.splitlines() if "glimpse.hw" in line]
    assert lines == ["INFO glimpse.hw: front panel: no button (button_pin is not set), no status LED "
                     "(led_pin is not set), no display (display is none); serving without them"]
    assert status["front_panel"] == {}
    assert "Traceback" not in log


def test_daemon_drives_a_mock_button_and_led(tmp_path, bundle_dir):
    # GPIOZERO_PIN_FACTORY=mock: gpiozero's MockFactory in the daemon process.
    status, log = _serve(tmp_path, bundle_dir, {"GPIOZERO_PIN_FACTORY": "mock"},
                         "--button-pin", "17", "--led-pin", "5,6,13")
    # light_state: the main loop told the panel the bundle is served.
    assert status["front_panel"] == {"button": "17", "light": "5,6,13", "light_state": "ready"}
    lines = [line for line in log.splitlines() if "glimpse.hw" in line]
    assert lines == ["INFO glimpse.hw: front panel: no display (display is none); serving without it"]
    assert "Traceback" not in log


def test_importing_the_daemon_loads_no_hardware_library():
    import subprocess

    code = ("import sys, device.daemon, device.hw, device.hw.panel, device.web; "
            "print(sorted(m for m in ('gpiozero', 'luma', 'luma.core', 'lgpio', 'RPi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_display_says_disk_full_while_the_data_disk_is_full(rig):
    """Issue 13.9: the daemon posts "disk full" when the ingest store hits a full disk, "disk ok" after."""
    r = rig(display=(128, 64, "1"))
    normal = r.device.image.tobytes()
    expected = render(Screen(address="192.168.1.20:8080", bundle_id=r.daemon.searcher.bundle.id, items=8,
                             caption="Press for a surprise", note="Disk full"), (128, 64), "1")
    r.panel.post("disk full")
    r.later()
    assert r.device.image.tobytes() == expected.tobytes()
    assert r.panel.describe()["light_state"] == "error"
    r.panel.post("disk ok")
    r.later()
    assert r.device.image.tobytes() == normal
    assert r.panel.describe()["light_state"] == "ready"

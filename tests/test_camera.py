""""What is this like?": the device's camera (through the hardware seam, with a mock
camera that takes real photos) and a photo sent from a phone's camera (the web form
and the JSON API), searched by image and never added to the library."""

from __future__ import annotations

import io
import json
import threading
import time
import struct
import zlib

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from luma.core.device import dummy
from PIL import Image

from conftest import REPO
from device import settings
from device.daemon import Daemon
from device.hw import HardwareOptions
from device.hw.camera import MockCamera
from device.hw.panel import Panel
from device.search import Searcher
from device.web import create_app
from provisioning import demo
from test_api import _response_schema, schema_errors

BUTTON = 17


@pytest.fixture(scope="module")
def searcher(bundle_dir):
    with Searcher.from_bundle(bundle_dir, verify="quick") as searcher:
        yield searcher


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))


@pytest.fixture
def factory():
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.close()
    Device.pin_factory = None


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _shot(name: str, variant: int = 3) -> bytes:
    """A phone-camera-like JPEG of a demo photo: cropped a little, so it is not the library's file."""
    img = Image.open(demo.demo_photo(name)).convert("RGB")
    img = img.crop((variant, variant, img.width - variant, img.height - variant))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class CameraRig:
    """A daemon with its bundle loaded and a panel: a mock button, a dummy display and a mock camera."""

    def __init__(self, searcher, tmp_path, sees: str | None = "chelsea.png", **overrides):
        values = {"bundle": str(searcher.bundle.path), "button_pin": str(BUTTON), "button_hold_time": 0.05,
                  "button_bounce_time": 0.0, "slideshow_results": 3, "saved_queries": "a rocket"}
        values.update(overrides)
        self.daemon = Daemon(settings.load(values, env={}))
        self.daemon._install(searcher)
        self.camera = None
        if sees:
            self.photo = tmp_path / "in-front-of-the-camera.jpg"
            self.photo.write_bytes(_shot(sees))
            self.camera = MockCamera(self.photo)
        self.woken = threading.Event()
        self.clock = Clock()
        self.panel = Panel(self.daemon, HardwareOptions.from_settings(self.daemon.settings), wake=self.woken.set,
                           clock=self.clock, address=lambda: "192.168.1.20:8080",
                           display_device=dummy(width=128, height=64, mode="1"), camera_device=self.camera)
        self.daemon.panel = self.panel
        self.panel.post("ready")
        self.panel.tick()

    def settle(self, actions: int, timeout: float = 60.0) -> None:
        """Play the main loop until the panel has taken ``actions`` actions (bounded)."""
        deadline = time.monotonic() + timeout
        while len(self.panel.actions) < actions:
            assert self.woken.wait(max(0.0, deadline - time.monotonic())), \
                f"the panel was not woken; actions so far {self.panel.actions}"
            self.woken.clear()
            self.panel.tick()
        self.clock.now += 1
        self.panel.tick()

    def hold(self) -> None:
        button = Device.pin_factory.pin(BUTTON)
        before = len(self.panel.actions)
        button.drive_low()
        self.settle(before + 1)
        button.drive_high()
        self.clock.now += 1
        self.panel.tick()

    def press(self) -> None:
        button = Device.pin_factory.pin(BUTTON)
        before = len(self.panel.actions)
        button.drive_low()
        button.drive_high()
        self.settle(before + 1)


@pytest.fixture
def rig(searcher, factory, tmp_path):
    rigs = []

    def make(**kwargs) -> CameraRig:
        rigs.append(CameraRig(searcher, tmp_path, **kwargs))
        return rigs[-1]
    yield make
    for made in rigs:
        made.panel.close()


# --- the device's camera, through the hardware seam ------------------------------------------


def test_a_hold_takes_a_photo_and_shows_the_most_similar_photos(rig):
    r = rig()  # button_hold = auto: with a camera, a hold is "What is this like?"
    frames = r.panel.hardware.display.frames
    r.hold()
    assert r.camera.captures == 1
    assert r.panel.actions == [("looked", 3)]
    showing = r.daemon.slideshow.snapshot()
    assert showing.source == "camera" and showing.query == "What the camera sees"
    assert showing.results[0].item.path == "pets/cat.png"  # the camera saw the cat
    assert r.panel.hardware.display.frames > frames  # the display drew the result
    assert r.daemon.metrics.queries.labels(kind="photo")._value.get() == 1
    # A short press then steps through what the camera found.
    r.press()
    assert r.panel.actions[-1] == ("advanced", 1)
    assert r.daemon.status()["front_panel"]["camera"].startswith("mock camera")


def test_what_the_camera_sees_decides_the_results(rig, spec):
    r = rig(sees="rocket.jpg")
    r.hold()
    assert r.daemon.slideshow.snapshot().results[0].item.path == "space/rocket.jpg"
    r.photo.write_bytes(_shot("coffee.png"))  # something else in front of the camera
    r.hold()
    assert r.daemon.slideshow.snapshot().results[0].item.path == "kitchen/coffee.png"
    assert r.camera.captures == 2
    status = create_app(r.daemon).test_client().get("/api/status").get_json()
    assert status["front_panel"]["camera"] == r.camera.name
    assert schema_errors(spec, _response_schema(spec, "/api/status", 200), status) == []


def test_a_hold_without_a_camera_when_asked_for_one_fails_visibly(rig):
    r = rig(sees=None, button_hold="camera", led_pin="27")
    r.hold()
    assert r.panel.actions == [("failed", "camera")]
    r.panel.tick()
    assert r.panel.describe()["light_state"] == "error"


def test_button_hold_shutdown_keeps_the_hold_for_shutting_down(rig):
    r = rig(button_hold="shutdown")
    r.hold()
    assert r.panel.actions == [("hold-ignored",)]  # no shutdown_command: nothing, and no photo
    assert r.camera.captures == 0


def test_the_admin_camera_action_shows_on_the_screen(rig, spec):
    r = rig(sees="astronaut.png")
    client = create_app(r.daemon).test_client()
    response = client.post("/api/admin/camera")
    assert response.status_code == 200
    body = response.get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/admin/camera", 200, "post"), body) == []
    assert body["count"] == 3
    kiosk = client.get("/api/kiosk").get_json()
    assert kiosk["title"] == "\u201cWhat the camera sees\u201d"
    assert kiosk["slides"][0]["path"] == "space/astronaut.png"
    # The page's button for it, where admin calls are allowed, works without JavaScript.
    page = client.get("/").get_data(as_text=True)
    assert 'id="camera-form"' in page
    token = client.get_cookie("glimpse_csrf").value
    shown = client.post("/camera", data={"csrf_token": token})
    assert shown.status_code == 200 and "What the camera sees" in shown.get_data(as_text=True)
    # From the network without a token: refused like every admin call.
    assert client.post("/api/admin/camera", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 403
    assert r.camera.captures == 2


def test_the_admin_camera_action_without_a_camera_is_a_409_with_the_reason(bundle_dir, spec):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir)}, env={}))
    daemon.load()
    client = create_app(daemon).test_client()
    response = client.post("/api/admin/camera")
    assert response.status_code == 409
    assert "no camera" in response.get_json()["error"]
    assert schema_errors(spec, _response_schema(spec, "/api/admin/camera", 409, "post"), response.get_json()) == []
    assert 'id="camera-form"' not in client.get("/").get_data(as_text=True)


def test_a_configured_camera_that_is_not_there_is_left_out_with_a_warning(caplog, monkeypatch):
    import builtins

    from device.hw import open_hardware

    real_import = builtins.__import__

    def no_picamera2(name, *args, **kwargs):
        if name == "picamera2":
            raise ModuleNotFoundError("No module named 'picamera2'", name="picamera2")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_picamera2)
    caplog.set_level("INFO", logger="glimpse.hw")
    hardware = open_hardware(HardwareOptions(camera="picamera2"), lambda event: None)
    assert not hardware.has_camera
    assert "no camera (picamera2 is not installed: sudo apt install python3-picamera2" in caplog.text


# --- a photo from a phone's camera, through the web page and the JSON API ------------------------


@pytest.fixture(scope="module")
def client(bundle_dir):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir), "max_upload_mb": 2}, env={}))
    daemon.load()
    return create_app(daemon).test_client()


def _form(client, data: bytes, name: str = "IMG_0042.jpg"):
    client.get("/")
    token = client.get_cookie("glimpse_csrf").value
    return client.post("/photo", data={"csrf_token": token, "photo": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_the_start_page_offers_the_phones_camera(client):
    page = client.get("/").get_data(as_text=True)
    assert 'type="file" name="photo" id="photo" accept="image/*" capture="environment"' in page
    assert 'enctype="multipart/form-data"' in page


def test_a_photo_from_the_phone_finds_the_most_similar_photos_and_is_not_kept(client, bundle_dir):
    items = (bundle_dir / "items.jsonl").read_text()
    response = _form(client, _shot("coffee.png"))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Photos most like the photo you sent" in page
    first = page.index("kitchen/coffee.png")
    assert all(first < page.find(other) or page.find(other) < 0 for other in ("pets/cat.png", "space/rocket.jpg"))
    assert (bundle_dir / "items.jsonl").read_text() == items
    assert client.get("/api/status").get_json()["items"] == len(items.splitlines())


@pytest.mark.parametrize("data, name, reason", [
    (b"", "empty.jpg", "empty file"),
    (b"just some text, not a photo", "notes.jpg", "not a photo"),
    (None, "truncated.jpg", "corrupt or truncated"),
    ("bomb", "bomb.png", "decompression bomb"),
])
def test_a_bad_photo_is_a_400_with_the_reason(client, data, name, reason):
    if data is None:
        data = _shot("coffee.png")[:3000]
    elif data == "bomb":
        data = _png_header(50_000, 50_000)
    page = _form(client, data, name)
    assert page.status_code == 400
    assert reason in page.get_data(as_text=True)
    api = client.post("/api/search/photo", data={"photo": (io.BytesIO(data), name)},
                      content_type="multipart/form-data", headers={"X-Glimpse-Client": "test"})
    assert api.status_code == 400
    assert reason in api.get_json()["error"]


def _png_header(width: int, height: int) -> bytes:
    """A small PNG file that claims ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_no_photo_and_too_large_a_photo_are_refused(client):
    client.get("/")
    token = client.get_cookie("glimpse_csrf").value
    missing = client.post("/photo", data={"csrf_token": token}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "no photo" in missing.get_data(as_text=True)
    # A body encoded by hand: the test client would spool it to a file it never closes.
    boundary = "glimpse-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"big.jpg\"\r\n\r\n"
            ).encode() + b"\xff" * (3 * 1024 * 1024) + f"\r\n--{boundary}--\r\n".encode()
    big = client.post("/api/search/photo", data=body, headers={"X-Glimpse-Client": "test"},
                      content_type=f"multipart/form-data; boundary={boundary}")
    assert big.status_code == 413
    # A form from another site cannot make the appliance decode photos for it.
    forged = client.post("/photo", data={"photo": (io.BytesIO(_shot("coffee.png")), "a.jpg")},
                         content_type="multipart/form-data")
    assert forged.status_code == 403


def test_the_json_api_searches_by_photo_as_documented(client, spec):
    response = client.post("/api/search/photo?k=3&folder=space",
                           data={"photo": (io.BytesIO(_shot("rocket.jpg")), "rocket.jpg")},
                           content_type="multipart/form-data", headers={"X-Glimpse-Client": "test"})
    assert response.status_code == 200
    body = response.get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/search/photo", 200, "post"), body) == []
    assert [r["path"] for r in body][0] == "space/rocket.jpg"
    assert len(body) == 3 and all(r["path"].startswith("space/") for r in body)
    bad = client.post("/api/search/photo?k=0", data={"photo": (io.BytesIO(_shot("rocket.jpg")), "r.jpg")},
                      content_type="multipart/form-data", headers={"X-Glimpse-Client": "test"})
    assert bad.status_code == 400
    assert schema_errors(spec, _response_schema(spec, "/api/search/photo", 400, "post"), bad.get_json()) == []

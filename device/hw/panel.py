"""The front panel's behaviour: what a press, a hold and a search do to the light and the display.

* A **short press** shows the next result of the last web search; once those are
  used up, or when nobody has searched, it runs the next saved query ("surprise
  me", cycling through ``saved_queries``) and shows its best match.
* A **hold** (``button_hold_time``) takes a photo with the camera and shows the
  photos most like it ("What is this like?") when there is a camera (``button_hold``
  auto or camera); otherwise it runs ``shutdown_command``, when one is set.
* The **light** shows ``starting`` until the bundle is served, then ``ready``;
  ``searching`` for a moment after every search; ``error`` after a failure
  until the next success (patterns in :mod:`device.hw.light`).
* The **display** redraws when the result in front changes, at most
  ``display_fps`` times a second.

Button callbacks and web requests only :meth:`Panel.post` an event; the daemon's
main loop calls :meth:`Panel.tick`, which does the work in that one thread.
"""

from __future__ import annotations

import logging
import queue
import socket
import subprocess
import threading
import time
import typing
from typing import Callable

from device.errors import GlimpseError
from device.hw.button import HOLD, PRESS
from device.hw.display import Screen
from device.hw.factory import HardwareOptions, open_hardware

if typing.TYPE_CHECKING:
    from device.admin import TokenStore
    from device.metrics import Metrics
    from device.search import Filters, Searcher
    from device.settings import Settings
    from device.slideshow import Showing, Slideshow

log = logging.getLogger("glimpse.hw")

#: How long the light shows ``searching`` after a search starts: long enough to
#: be seen, though a search takes tens of milliseconds.
SEARCH_FLASH_SECONDS = 0.4

#: Events :meth:`Panel.post` accepts besides the button's PRESS and HOLD.
CHANGED = "changed"  # the slideshow changed (from any thread)
READY = "ready"      # serving (after start-up or a reload)
ERROR = "error"      # something failed (a reload was refused)
DISK_FULL = "disk full"  # the data directory's disk is full: adding photos waits
DISK_OK = "disk ok"      # space returned
TOKEN = "token"      # the first-start admin token appeared or stopped being shown
SURPRISE = "surprise"  # run the next saved query (Home Assistant's "Surprise me" button)


class PanelContext(typing.Protocol):
    """What the front panel uses of the daemon (:class:`device.daemon.Daemon` is one)."""

    settings: Settings
    metrics: Metrics
    slideshow: Slideshow
    admin: TokenStore

    @property
    def serving(self) -> Searcher | None:
        """The searcher serving now, ``None`` while starting (the display says so)."""

    def show(self, query: str, *, filters: Filters | None = None, similar_to: str | None = None,
             source: str = "web", kind: str = "text") -> Showing:
        """Search, count the search, and put the results on the device's screen (saved queries)."""

    def look(self) -> Showing:
        """Take a photo with the camera and show the photos most like it (a hold)."""


class Panel:
    """Drives the hardware for one daemon.

    Args:
        daemon: the :class:`device.daemon.Daemon`, or anything else that is a
            :class:`PanelContext`.
        options: parsed front-panel settings.
        wake: called after an event is posted, to wake the main loop.
        clock: monotonic time (tests inject one).
        address: returns the ``host:port`` shown on the display (default: this
            machine's address on its default route).
        **hardware_args: passed to :func:`~device.hw.factory.open_hardware`
            (``pin_factory``, ``display_device``).

    Raises:
        HardwareInvalid: a front-panel setting cannot be meant.
    """

    def __init__(self, daemon: PanelContext, options: HardwareOptions, wake: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, address: Callable[[], str] | None = None,
                 **hardware_args):
        self.daemon = daemon
        self.options = options
        self._wake = wake
        self._clock = clock
        self._address = address or (lambda: local_address(daemon.settings.host, daemon.settings.port))
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._base = "starting"
        self._flash_until: float | None = None
        self._next_saved = 0
        self._shutdown: subprocess.Popen | None = None
        self._looking: threading.Thread | None = None
        self._dirty = True
        self._note = "Starting"
        #: What the panel did, newest last (for logs and tests): ``("advanced", 2)``,
        #: ``("saved", query)``, ``("shutdown", argv)``...
        self.actions: list[tuple] = []
        self.hardware = open_hardware(options, self.post, clock=clock, **hardware_args)
        self.hardware.light("starting")
        daemon.slideshow.listen(lambda showing: self.post(CHANGED))

    # --- from any thread ---------------------------------------------------------------

    def post(self, event: str) -> None:
        """Queue ``event`` (``press``, ``hold``, ``changed``, ``ready``, ``error``, ``disk full``,
        ``disk ok``, ``token``, ``surprise``) for the main loop."""
        self._events.put(event)
        self._wake()

    # --- the main loop's thread ---------------------------------------------------------

    def tick(self) -> float | None:
        """Handle queued events and due work.

        Returns:
            Seconds until the panel next needs a tick (a blink to end, a frame
            the limiter held back), or ``None`` when it needs none until an event.
        """
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._handle(event)
        now = self._clock()
        waits = []
        if self._flash_until is not None:
            if now >= self._flash_until:
                self._flash_until = None
                self.hardware.light(self._base)
            else:
                waits.append(self._flash_until - now)
        if self._shutdown is not None:
            waits.append(self._check_shutdown())
        if self._dirty:
            self._dirty = False
            self.hardware.screen(self._screen())
        due = self.hardware.poll()
        if due is not None:
            waits.append(due)
        waits = [w for w in waits if w is not None]
        return max(0.0, min(waits)) if waits else None

    def describe(self) -> dict:
        """The parts in use and the light's state, for ``/api/status``."""
        found = self.hardware.describe()
        if self.hardware.has_light:
            found["light_state"] = "searching" if self._flash_until is not None else self._base
        return found

    def close(self) -> None:
        """Light off, leave a last screen on the display, release the hardware."""
        note = "Shutting down" if self._shutdown is not None or self._note == "Shutting down" else "Stopped"
        if self._shutdown is not None:
            try:  # `systemctl poweroff` returns as soon as the job is queued
                self._shutdown.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("the shutdown command is still running as the daemon stops")
        self.hardware.close(Screen(address=self._address_text(), note=note, caption="Glimpse"))

    def _handle(self, event: str) -> None:
        if event == PRESS:
            self._count("press")
            self._press()
        elif event == HOLD:
            self._count("hold")
            self._hold()
        elif event == CHANGED:
            showing = self.daemon.slideshow.snapshot()
            if showing.source == "web" and showing.position == 0:
                self._flash()  # someone searched in the web UI
            self._dirty = True
        elif event == READY:
            self._note = ""
            self._set_base("ready")
            self._dirty = True
        elif event == ERROR:
            self._set_base("error")
        elif event == DISK_FULL:
            self._note = "Disk full"
            self._set_base("error")
            self._dirty = True
        elif event == DISK_OK:
            if self._note == "Disk full":
                self._note = ""
                self._set_base("ready")
                self._dirty = True
        elif event == TOKEN:
            self._dirty = True
        elif event == SURPRISE:
            if self.options.saved_queries:
                self._run_saved()
            else:
                self._record("nothing")
                log.info("surprise asked for: saved_queries is empty")
        else:
            raise ValueError(f"unknown panel event {event!r}")

    def _press(self) -> None:
        slideshow = self.daemon.slideshow
        showing = slideshow.snapshot()
        if showing.source in ("web", "camera") and not showing.at_last:
            state = slideshow.advance()
            self._record("advanced", state.position)
        elif self.options.saved_queries:
            self._run_saved()
        elif showing.results:
            state = slideshow.advance()  # no saved queries: go round the results again
            self._record("advanced", state.position)
        else:
            self._record("nothing")
            log.info("button pressed: no results to step through and no saved_queries to run")

    def _run_saved(self) -> None:
        queries = self.options.saved_queries
        query = queries[self._next_saved % len(queries)]
        self._next_saved += 1
        self._flash()
        try:
            self.daemon.show(query, source="saved", kind="saved")
        except GlimpseError as exc:
            log.error("saved query %r failed: %s", query, exc)
            self._record("failed", query)
            self._set_base("error")
            return
        self._record("saved", query)
        self._set_base("ready")

    def _hold(self) -> None:
        action = self.options.hold_action
        if action == "camera" or (action == "auto" and self.hardware.has_camera):
            self._look()
            return
        argv = self.options.shutdown_argv
        if not argv:
            self._record("hold-ignored")
            log.warning("button held: shutdown_command is not set, so nothing happens")
            return
        if self._shutdown is not None:
            return  # the command is already running
        log.warning("button held for %.1f s: running the shutdown command %s", self.options.hold_time,
                    " ".join(argv))
        try:
            self._shutdown = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("the shutdown command %s could not start: %s", argv[0], exc)
            self._record("failed", argv[0])
            self._set_base("error")
            return
        self._record("shutdown", argv)
        self._note = "Shutting down"
        self._set_base("off")
        self._dirty = True

    def _look(self) -> None:
        """"What is this like?": the photo, its embedding and the search take about a second
        on a Pi, so they run beside the main loop, which keeps pinging the watchdog."""
        if self._looking is not None and self._looking.is_alive():
            return  # a photo is being taken already
        self._flash()

        def look():
            try:
                showing = self.daemon.look()
            except GlimpseError as exc:
                log.error("button held: %s", exc)
                self._record("failed", "camera")
                self._events.put(ERROR)
            except Exception:  # noqa: BLE001 - a camera fault must not end the daemon
                log.exception("button held: taking a photo failed")
                self._record("failed", "camera")
                self._events.put(ERROR)
            else:
                self._record("looked", len(showing.results))
            self._wake()
        self._looking = threading.Thread(target=look, name="camera", daemon=True)
        self._looking.start()

    def _check_shutdown(self) -> float | None:
        code = self._shutdown.poll()
        if code is None:
            return 0.5  # look again soon, without holding up the watchdog
        self._shutdown = None
        if code != 0:
            log.error("the shutdown command exited with status %d", code)
            self._note = ""
            self._set_base("error")
            self._dirty = True
        return None

    def _flash(self) -> None:
        self._flash_until = self._clock() + SEARCH_FLASH_SECONDS
        self.hardware.light("searching")

    def _set_base(self, state: str) -> None:
        self._base = state
        if self._flash_until is None:
            self.hardware.light(state)

    def _record(self, *action) -> None:
        self.actions.append(action)
        log.info("button: %s", " ".join(map(str, action)))

    def _count(self, event: str) -> None:
        self.daemon.metrics.button.labels(event=event).inc()

    def _address_text(self) -> str:
        try:
            return self._address()
        except OSError:
            return ""

    def _screen(self) -> Screen:
        showing = self.daemon.slideshow.snapshot()
        searcher = self.daemon.serving  # None while starting
        bundle = searcher.bundle if searcher is not None else None
        current = showing.current
        thumb = None
        if current is not None and bundle is not None and not self._note:
            try:
                thumb = bundle.file(current.item.thumb)
            except GlimpseError:
                thumb = None  # its bundle was replaced meanwhile; draw without it
        hint = "" if current or not bundle else ("Press for a surprise" if self.hardware.has_button else "")
        return Screen(
            address=self._address_text(), bundle_id=bundle.id if bundle else "",
            items=len(bundle) if bundle else 0, query=showing.query,
            position=f"{showing.position + 1}/{len(showing.results)}" if current else "",
            caption=current.item.name if current else hint, thumb=thumb, note=self._note,
            admin_token=getattr(self.daemon.admin, "first_token", None) or "",
        )


def local_address(host: str, port: int) -> str:
    """``address:port`` a visitor would browse to.

    A specific listening address is shown as it is; for ``0.0.0.0``/``::`` it is
    this machine's address on its default route ("" without a network).
    """
    if host not in ("0.0.0.0", "::", ""):
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # connect() on a datagram socket only picks a route; nothing is sent.
            sock.connect(("192.0.2.1", 9))
            return f"{sock.getsockname()[0]}:{port}"
    except OSError:
        return ""

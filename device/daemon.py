"""The Glimpse daemon: one process that owns the model, the bundle and the web server.

* READY is sent to systemd only after the bundle is verified, the text tower is
  loaded and the socket is listening.
* Watchdog pings come from the main loop, which also checks that the server
  thread is alive; a dead server stops the pings and systemd restarts us.
* SIGHUP (or ``glimpse reload``, or the admin API) verifies the new bundle first
  and then swaps it in; requests in flight finish on the bundle they started
  with, because each request holds its own reference to the searcher.
* SIGTERM stops accepting connections, lets requests in flight finish (up to
  ``shutdown_timeout``) and exits 0.
* The front panel (button, status light, display; :mod:`device.hw`) is opened
  first, so the light shows "starting" while the bundle loads, and driven from
  the main loop; without any of it the daemon serves as before.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from device.errors import BundleInvalid, GlimpseError
from device.metrics import Metrics
from device.search import Searcher, SearcherOptions
from device.settings import Settings
from device.slideshow import Slideshow
from device.systemd import Notifier

log = logging.getLogger("glimpse")

BUNDLES_DIR = "bundles"
CURRENT_LINK = "current"


class Daemon:
    """Holds the searcher being served and swaps it on reload.

    Args:
        settings: effective settings (see :mod:`device.settings`).
        notifier: systemd notifier (default: from the environment).
    """

    def __init__(self, settings: Settings, notifier: Notifier | None = None):
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.started = time.time()
        self._searcher: Searcher | None = None
        self._reload_lock = threading.Lock()
        #: The results the button, the display and the kiosk page step through.
        self.slideshow = Slideshow()
        #: The front panel while :meth:`serve` runs (``None`` otherwise).
        self.panel = None

    @property
    def searcher(self) -> Searcher:
        """The searcher serving now. Hold the returned reference for a whole request."""
        searcher = self._searcher
        if searcher is None:
            raise GlimpseError("no bundle is loaded yet")
        return searcher

    @property
    def serving(self) -> Searcher | None:
        """The searcher serving now, or ``None`` before the first load (no exception)."""
        return self._searcher

    def _open(self, bundle_dir: Path, verify: str | None = None) -> Searcher:
        return Searcher.create_from_options(SearcherOptions(
            bundle_dir=bundle_dir, verify=verify or self.settings.verify,
            num_threads=self.settings.model_threads, max_query_chars=self.settings.max_query_chars,
        ))

    def load(self) -> Searcher:
        """Open the configured bundle (``bundle`` or ``data_dir/current``).

        Raises:
            BundleInvalid: it fails verification (nothing is served).
        """
        searcher = self._open(self.settings.bundle_dir())
        self._install(searcher)
        return searcher

    def _install(self, searcher: Searcher) -> None:
        self._searcher = searcher
        self.metrics.bundle_loaded(searcher.bundle)
        log.info("serving bundle %s: %d photos, model %s", searcher.bundle.id, len(searcher.bundle),
                 searcher.bundle.spec.full_id)

    def reload(self, bundle_name: str | None = None) -> dict:
        """Verify a bundle, then serve it instead of the current one.

        Args:
            bundle_name: a directory under ``data_dir/bundles`` to switch the
                ``current`` link to; ``None`` re-reads what the configuration
                points at (``bundle``, or the ``current`` link as it is now).

        Returns:
            ``{"bundle_id": new, "previous": old}``.

        Raises:
            BundleInvalid: the new bundle fails verification; the old one keeps serving
                and the ``current`` link is left as it was.
        """
        with self._reload_lock:
            self.notifier.reloading()
            previous = self._searcher.bundle.id if self._searcher else None
            try:
                if bundle_name is not None:
                    target = self._bundle_by_name(bundle_name)
                    searcher = self._open(target, verify="full")  # a new bundle is checked in full
                    _switch_link(Path(self.settings.data_dir) / CURRENT_LINK, target)
                else:
                    searcher = self._open(self.settings.bundle_dir(), verify="full")
            except GlimpseError as exc:
                self.metrics.reloads.labels(result="refused").inc()
                log.error("reload refused, still serving %s: %s", previous, exc)
                self.notifier.ready(f"reload refused; serving {previous}")
                self._tell_panel("error")
                raise
            self._install(searcher)
            self.slideshow.clear()  # its results are photos of the old bundle
            self._tell_panel("ready")
            self.metrics.reloads.labels(result="ok").inc()
            self.notifier.ready(f"serving {searcher.bundle.id}")
            return {"bundle_id": searcher.bundle.id, "previous": previous}

    def _tell_panel(self, event: str) -> None:
        panel = self.panel
        if panel is not None:
            panel.post(event)

    def _bundle_by_name(self, name: str) -> Path:
        bundles = Path(self.settings.data_dir) / BUNDLES_DIR
        if not name or "/" in name or name in {".", ".."} or name.startswith("."):
            raise BundleInvalid(f"{name!r} is not a bundle name (a directory under {bundles})")
        return bundles / name

    def status(self) -> dict:
        """What ``/api/status`` reports."""
        searcher = self.searcher
        bundle = searcher.bundle
        created = _parse_time(bundle.manifest.get("created"))
        return {
            "status": "ok",
            "version": _version(),
            "bundle_id": bundle.id,
            "bundle_created": bundle.manifest.get("created"),
            "bundle_age_seconds": round(time.time() - created, 1) if created else None,
            "items": len(bundle),
            "model": bundle.spec.full_id,
            "dim": bundle.spec.dim,
            "index": bundle.manifest.get("index", {"kind": "exact"}),
            "uptime_seconds": round(time.time() - self.started, 1),
            "queries": int(self.metrics.total_queries()),
            "front_panel": self.panel.describe() if self.panel is not None else {},
        }

    def serve(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit status.

        Raises:
            BundleInvalid: the bundle fails verification at start-up.
            HardwareInvalid: a front-panel setting cannot be meant.
            OSError: the port cannot be bound.
        """
        wake = threading.Event()
        self.panel = _open_panel(self, wake.set)
        self.panel.tick()  # "starting" on the display while the bundle loads
        try:
            return self._serve(wake)
        finally:
            self.panel.close()
            self.panel = None

    def _serve(self, wake: threading.Event) -> int:
        from cheroot import wsgi

        from device.web import create_app

        self.load()
        settings = self.settings
        # A deep listen backlog: with the default of 5, a burst of new connections
        # overflows it and clients stall a whole SYN retransmit (1 s).
        server = wsgi.Server((settings.host, settings.port), create_app(self), numthreads=settings.threads,
                             server_name="glimpse", shutdown_timeout=settings.shutdown_timeout,
                             request_queue_size=128)
        server.prepare()  # binds and listens: from here a request can be answered
        requests = {"stop": False, "reload": False}

        def _on_signal(signum, frame):
            requests["stop" if signum in (signal.SIGTERM, signal.SIGINT) else "reload"] = True
            wake.set()

        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        thread = threading.Thread(target=server.serve, name="http", daemon=True)
        thread.start()
        host, port = server.bind_addr[:2]
        url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
        self.notifier.ready(f"serving {self.searcher.bundle.id} at {url}")
        print(f"Glimpse is serving {len(self.searcher.bundle)} photos at {url}", flush=True)
        self.panel.post("ready")
        status = 0
        last_ping = 0.0
        try:
            while True:
                # The panel's own work (a blink ending, a held-back frame) may be due sooner.
                panel_due = self.panel.tick()
                timeout = self.notifier.watchdog_interval or 1.0
                wake.wait(timeout if panel_due is None else min(timeout, panel_due))
                wake.clear()
                if requests["stop"]:
                    break
                if requests["reload"]:
                    requests["reload"] = False
                    try:
                        self.reload()
                    except GlimpseError:
                        pass  # logged by reload(); the old bundle keeps serving
                if not thread.is_alive():
                    log.error("the HTTP server thread died; exiting so systemd restarts the service")
                    status = 1
                    break
                # Ping when systemd asked for it, at most twice per interval: the panel
                # can wake the loop often, and a ping per wake would flood the socket.
                interval = self.notifier.watchdog_interval
                if interval and time.monotonic() - last_ping >= interval / 2:
                    self.notifier.watchdog()
                    last_ping = time.monotonic()
        finally:
            self.notifier.stopping()
            log.info("stopping: finishing requests in flight (up to %ss)", settings.shutdown_timeout)
            server.stop()  # closes the socket, waits for worker threads to finish
            thread.join(timeout=settings.shutdown_timeout + 5)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            log.info("stopped")
        return status


def _open_panel(daemon: Daemon, wake):
    """The front panel from the settings (gpiozero and luma load only if configured)."""
    from device.hw import HardwareOptions
    from device.hw.panel import Panel

    return Panel(daemon, HardwareOptions.from_settings(daemon.settings), wake)


def _switch_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    # A relative target keeps the data directory relocatable.
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def _parse_time(text) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _version() -> str:
    from device import __version__

    return __version__


def configure_logging(level: str) -> None:
    """One line per event on stderr, which journald stores as it is."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


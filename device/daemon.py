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
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from device import datadir
from device.datadir import BUNDLES_DIR, CURRENT_LINK
from device.errors import GlimpseError
from device.metrics import Metrics
from device.search import Searcher, SearcherOptions
from device.settings import Settings
from device.slideshow import Slideshow
from device.systemd import Notifier

log = logging.getLogger("glimpse")

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
        # On-device ingest (see device/ingest.py); None when off.
        self.ingest_store = None
        self.delta = None
        self.ingestor = None
        self.watcher = None
        self._image_encoder = None
        self._encoder_lock = threading.Lock()
        self._stopping = threading.Event()
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
        if self.delta is not None:
            model = searcher.bundle.spec.embedding_key
            if model != self.delta.model:  # a bundle with another model: added photos are embedded again
                requeued = self.ingest_store.requeue_other_models(model)
                log.info("new model %s: %d added photos queued to be embedded again", model, requeued)
                self.delta.model = model
                self.delta.refresh()
                with self._encoder_lock:
                    self._image_encoder = None
                if self.ingestor:
                    self.ingestor.wake()
            searcher.delta = self.delta
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
                    target = datadir.bundle_by_name(self.settings.data_dir, bundle_name)
                    link = Path(self.settings.data_dir) / CURRENT_LINK
                    if link.exists() and not link.is_symlink():
                        raise GlimpseError(f"{link} is a directory, not a link: move it under "
                                           f"{Path(self.settings.data_dir) / BUNDLES_DIR} and link it")
                    searcher = self._open(target, verify="full")  # a new bundle is checked in full
                    datadir.switch_link(link, target)
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

    def _reload_logged(self) -> None:
        try:
            self.reload()
        except GlimpseError:
            pass  # logged by reload(); the old bundle keeps serving

    def start_ingest(self) -> bool:
        """Open the ingest store and start the worker (and the folder watcher), as the settings say.

        Returns:
            Whether ingest is on. When it cannot start (a read-only data
            directory...), the daemon serves without it and logs why.
        """
        from device.ingest import DeltaLayer, FolderWatcher, IngestStore, Ingestor

        mode = self.settings.ingest
        if mode == "off" or (mode == "auto" and self.settings.bundle):
            log.info("adding photos on the device is off (ingest=%s)", mode)
            return False
        try:
            self.ingest_store = IngestStore(Path(self.settings.data_dir))
        except (OSError, sqlite3.Error) as exc:
            log.warning("adding photos on the device is off: cannot use %s: %s", self.settings.data_dir, exc)
            return False
        model = self.searcher.bundle.spec.embedding_key
        requeued = self.ingest_store.requeue_other_models(model)
        if requeued:
            log.info("%d added photos queued to be embedded with %s", requeued, model)
        self.delta = DeltaLayer(self.ingest_store, model)
        self.searcher.delta = self.delta
        self.ingestor = Ingestor(self.ingest_store, self._encoder_for_ingest, self.delta.refresh)
        self.ingestor.start()
        if self.settings.watch_dir:
            self.watcher = FolderWatcher(self.ingest_store, Path(self.settings.watch_dir), self._added)
            threading.Thread(target=self._watch, name="watch", daemon=True).start()
        log.info("adding photos on the device is on: %d added photos searchable, %d queued",
                 len(self.delta), self.ingest_store.counts()["queued"])
        return True

    def _encoder_for_ingest(self):
        """The image tower of the model being served, loaded on first use."""
        from device.encoders import EncoderOptions, ImageEncoder

        with self._encoder_lock:
            bundle = self.searcher.bundle
            if (self._image_encoder is None
                    or self._image_encoder.spec.embedding_key != bundle.spec.embedding_key):
                self._image_encoder = ImageEncoder.create_from_options(
                    EncoderOptions(model_dir=bundle.model_dir, num_threads=1, verify=False))
            return self._image_encoder

    def _added(self) -> None:
        """New work for the ingest worker."""
        self.delta.refresh()
        if self.ingestor:
            self.ingestor.wake()

    def _watch(self) -> None:
        stop = self._stopping
        while not stop.is_set():
            try:
                self.watcher.scan()
            except Exception:  # noqa: BLE001 - a bad scan must not stop the watching
                log.exception("scanning %s failed", self.settings.watch_dir)
            stop.wait(self.settings.watch_interval)

    def _tell_panel(self, event: str) -> None:
        panel = self.panel
        if panel is not None:
            panel.post(event)

    def status(self) -> dict:
        """What ``/api/status`` reports."""
        searcher = self.searcher
        bundle = searcher.bundle
        created = _parse_time(bundle.manifest.get("created"))
        ingest = {"enabled": self.ingest_store is not None}
        if self.ingest_store is not None:
            ingest.update(self.ingest_store.counts())
            ingest["searchable"] = len(self.delta)
            ingest["worker_alive"] = self.ingestor.alive
            ingest["watching"] = self.settings.watch_dir or None
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
            "ingest": ingest,
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
        self.start_ingest()
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
        # The light shows "ready" before systemd (and /api/status) hear so: handled here,
        # not left to the loop's first tick, which raced the first status request.
        self.panel.post("ready")
        self.panel.tick()
        self.notifier.ready(f"serving {self.searcher.bundle.id} at {url}")
        print(f"Glimpse is serving {len(self.searcher.bundle)} photos at {url}", flush=True)
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
                    # Verifying a large bundle in full takes long on a Pi: the main
                    # loop must go on pinging the watchdog meanwhile.
                    threading.Thread(target=self._reload_logged, name="reload", daemon=True).start()
                if not thread.is_alive():
                    log.error("the HTTP server thread died; exiting so systemd restarts the service")
                    status = 1
                    break
                if self.ingestor and not self.ingestor.alive and not self._stopping.is_set():
                    log.error("the ingest worker stopped; starting it again")
                    self.ingestor.start()
                # Ping when systemd asked for it, at most twice per interval: the panel
                # can wake the loop often, and a ping per wake would flood the socket.
                interval = self.notifier.watchdog_interval
                if interval and time.monotonic() - last_ping >= interval / 2:
                    self.notifier.watchdog()
                    last_ping = time.monotonic()
        finally:
            self._stopping.set()
            self.notifier.stopping()
            log.info("stopping: finishing requests in flight (up to %ss)", settings.shutdown_timeout)
            server.stop()  # closes the socket, waits for worker threads to finish
            thread.join(timeout=settings.shutdown_timeout + 5)
            if self.ingestor:
                self.ingestor.stop()  # finishes the photo in hand; queued ones wait for the next start
            if self.ingest_store:
                self.ingest_store.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            log.info("stopped")
        return status


def _open_panel(daemon: Daemon, wake):
    """The front panel from the settings (gpiozero and luma load only if configured)."""
    from device.hw import HardwareOptions
    from device.hw.panel import Panel

    return Panel(daemon, HardwareOptions.from_settings(daemon.settings), wake)


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


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
* Being found on the LAN (:mod:`device.mdns`) and the Home Assistant bridge
  (:mod:`device.home_assistant`) start after READY, in background threads:
  neither a slow mDNS probe nor an absent broker delays serving.
"""

from __future__ import annotations

import datetime as _dt
import logging
import signal
import sqlite3
import sys
import threading
import time
import typing
from pathlib import Path

from device import datadir
from device.admin import AttemptLimiter, TokenStore
from device.datadir import BUNDLES_DIR, CURRENT_LINK
from device.errors import GlimpseError, PortInUse
from device.metrics import Metrics
from device.search import Searcher, SearcherOptions
from device.settings import Settings
from device.slideshow import Slideshow
from device.systemd import Notifier
from device.wording import plural

if typing.TYPE_CHECKING:
    from device.delta import DeltaLayer
    from device.ingest import FolderWatcher, IngestStore, Ingestor

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
        self.ingest_store: IngestStore | None = None
        self.delta: DeltaLayer | None = None
        self.ingestor: Ingestor | None = None
        self.watcher: FolderWatcher | None = None
        self._image_encoder = None
        self._encoder_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self._stopping = threading.Event()
        #: The results the button, the display and the kiosk page step through.
        self.slideshow = Slideshow()
        #: The front panel while :meth:`serve` runs (``None`` otherwise).
        self.panel = None
        #: The admin token's hash (and, after a first start, the token until it is used).
        self.admin = TokenStore(Path(settings.data_dir), settings.admin_token_sha256)
        self.admin.on_used = lambda: self._tell_panel("token")
        #: Wrong admin tokens per client address (429 past the limit).
        self.attempts = AttemptLimiter(settings.admin_max_failures, settings.admin_failure_window)
        #: ``starting``, ``ready``, ``reload refused`` or ``stopping`` (the Home Assistant status sensor).
        self.state = "starting"
        #: The Home Assistant bridge and the mDNS announcer while :meth:`serve` runs (``None``: off).
        self.bridge = None
        self.advertiser = None
        self.advertised_by = "off"

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
            BundleNameInvalid: ``bundle_name`` is not a plain directory name.
            BundleInvalid: the new bundle fails verification; the old one keeps serving
                and the ``current`` link points at it (switched back if someone had
                pointed it at the refused bundle), so a restart serves it too.
        """
        with self._reload_lock:
            previous = self._searcher.bundle.id if self._searcher else None
            self.notifier.reloading()
            # Whatever happens below, systemd must hear READY again: a RELOADING=1 left
            # unanswered makes it treat the service as stuck in its reload.
            outcome = f"reload refused; serving {previous}"
            try:
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
                    self._restore_current()
                    self._tell_panel("error")
                    raise
                except Exception:
                    # Not a refusal we foresaw (a bug, an OS error): still counted and logged,
                    # and the old bundle keeps serving.
                    self.metrics.reloads.labels(result="refused").inc()
                    log.exception("reload failed, still serving %s", previous)
                    self._restore_current()
                    self._tell_panel("error")
                    raise
                self._install(searcher)
                self.slideshow.clear()  # its results are photos of the old bundle
                self._tell_panel("ready")
                self.metrics.reloads.labels(result="ok").inc()
                outcome = f"serving {searcher.bundle.id}"
                return {"bundle_id": searcher.bundle.id, "previous": previous}
            finally:
                self.notifier.ready(outcome)

    def show(self, query: str, *, filters=None, similar_to: str | None = None, source: str = "web",
             kind: str = "text"):
        """Search, count the search, and make the results what the device shows
        (the button steps through them, the display and the kiosk page draw them).

        Args:
            query: the text searched, also the title shown above the results.
            filters: a :class:`device.search.Filters` (none: the whole library).
            similar_to: an item id: the photos most like it instead of a text search.
            source: the :class:`~device.slideshow.Slideshow` source (``web`` or ``saved``).
            kind: the ``glimpse_queries_total`` label (``text``, ``similar``, ``saved``).

        Returns:
            The :class:`~device.slideshow.Showing` now on the screen.

        Raises:
            QueryInvalid: a bad query or filter; ItemNotFound: an unknown ``similar_to``.
        """
        from device.search import Filters

        searcher = self.searcher
        k = self.settings.slideshow_results
        filters = filters or Filters()
        if similar_to is not None:
            results = searcher.similar(similar_to, k=k, filters=filters)
        else:
            results = searcher.search(query, k=k, filters=filters)
        self.metrics.queries.labels(kind=kind).inc()
        return self.slideshow.show(query.strip(), results, source)

    def _restore_current(self) -> None:
        """After a refused reload, point ``current`` back at the bundle being served.

        Whoever switched the link (``ln -sfn`` and SIGHUP, a push) left it on the
        refused bundle; the next start would then fail. The switch back is atomic
        (a new link renamed over the old) and logged. Nothing happens when an
        explicit ``bundle`` setting is served, or when ``current`` is not a link.
        """
        searcher = self._searcher
        if searcher is None or self.settings.bundle:
            return
        link = Path(self.settings.data_dir) / CURRENT_LINK
        if not link.is_symlink():
            return
        serving = searcher.bundle.path
        try:
            if link.resolve() == serving:
                return
        except OSError:
            pass  # a dangling or looping link: switched back below
        try:
            datadir.switch_link(link, serving)
        except GlimpseError as exc:
            log.error("could not switch %s back to the bundle being served (%s): %s; the next start "
                      "would fail: point it at a good bundle", link, serving.name, exc)
            return
        log.warning("%s switched back to %s, the bundle being served, so that the next start serves it too",
                    link, serving.name)

    def show_photo(self, image, title: str = "What the camera sees", *, filters=None, source: str = "camera",
                   k: int | None = None):
        """Embed a photo that is not in the library and show the photos most like it
        (the button steps through them, the display and the kiosk page draw them).

        Args:
            image: a PIL image, upright.
            title: shown above the results.
            filters: a :class:`device.search.Filters` (none: the whole library).
            source: the :class:`~device.slideshow.Slideshow` source.
            k: how many results (default ``slideshow_results``).

        Returns:
            The :class:`~device.slideshow.Showing` now on the screen.
        """
        results = self.similar_to_photo(image, k=k or self.settings.slideshow_results, filters=filters)
        return self.slideshow.show(title, results, source)

    def similar_to_photo(self, image, k: int = 10, offset: int = 0, filters=None):
        """The photos most like ``image`` (a PIL image not in the library), best first.

        Raises:
            QueryInvalid: bad ``k``/``offset``.
        """
        from device.search import Filters, check_page

        k, offset = check_page(k, offset)
        searcher = self.searcher
        vector = self.embed_photo(image)
        results = searcher.search_vector(vector, k, offset, filters or Filters())
        self.metrics.queries.labels(kind="photo").inc()
        return results

    def decode_photo(self, data: bytes, name: str = "photo"):
        """A photo sent to search by, decoded no larger than the image tower needs.

        Raises:
            ImageUnreadable: not an image, truncated, or a decompression bomb (the reason says which).
        """
        from device import images

        size = self._encoder_for_ingest().input_size
        return images.decode_photo_bytes(data, name, min_side=size).image

    def embed_photo(self, image):
        """Embed ``image`` with the served model's image tower (loaded on first use)."""
        # The encoder is shared with the ingest worker; its embed_image takes the lock.
        return self._encoder_for_ingest().embed_image(image)

    @property
    def has_camera(self) -> bool:
        """Whether the front panel's camera can take a photo to search by (:meth:`look`)."""
        panel = self.panel
        return panel is not None and panel.hardware.has_camera

    def look(self):
        """"What is this like?": take a photo with the camera and show the most similar photos.

        Returns:
            The :class:`~device.slideshow.Showing` now on the screen.

        Raises:
            CameraUnavailable: there is no camera (or it failed).
        """
        panel = self.panel
        if panel is None or not panel.hardware.has_camera:
            from device.errors import CameraUnavailable

            raise CameraUnavailable("this device has no camera (setting camera = picamera2, with the camera "
                                    "module connected and python3-picamera2 installed)")
        image = panel.hardware.capture()
        log.info("camera: took a %dx%d photo; searching for photos like it", image.width, image.height)
        return self.show_photo(image)

    def _reload_logged(self) -> None:
        try:
            self.reload()
        except Exception:  # noqa: BLE001 - logged (with its traceback if unforeseen) by reload()
            pass  # the old bundle keeps serving

    def start_ingest(self) -> bool:
        """Open the ingest store and start the worker (and the folder watcher), as the settings say.

        Returns:
            Whether ingest is on. When it cannot start (a read-only data
            directory...), the daemon serves without it and logs why.
        """
        from device.delta import DeltaLayer
        from device.ingest import FolderWatcher, IngestStore, Ingestor

        mode = self.settings.ingest
        if mode == "off" or (mode == "auto" and self.settings.bundle):
            log.info("adding photos on the device is off (ingest=%s)", mode)
            return False
        from device import images

        budget = images.decode_budget(self.settings.decode_budget_mb)
        try:
            self.ingest_store = IngestStore(Path(self.settings.data_dir), max_bytes=budget)
        except (OSError, sqlite3.Error, GlimpseError) as exc:
            log.warning("adding photos on the device is off: cannot use %s: %s", self.settings.data_dir, exc)
            return False
        model = self.searcher.bundle.spec.embedding_key
        requeued = self.ingest_store.requeue_other_models(model)
        if requeued:
            log.info("%d added photos queued to be embedded with %s", requeued, model)
        self.delta = DeltaLayer(self.ingest_store, model)
        self.searcher.delta = self.delta
        self.ingestor = Ingestor(self.ingest_store, self._encoder_for_ingest, self.delta.refresh,
                                 max_bytes=budget, max_attempts=self.settings.ingest_max_attempts)
        self.ingestor.start()
        log.info("decoding an added photo may take up to %d MiB (decode_budget_mb)", budget // 2**20)
        if self.settings.watch_dir:
            self.watcher = FolderWatcher(self.ingest_store, Path(self.settings.watch_dir), self._added)
            threading.Thread(target=self._watch, name="watch", daemon=True).start()
        log.info("adding photos on the device is on: %d added photos searchable, %d queued",
                 len(self.delta), self.ingest_store.counts()["queued"])
        return True

    def first_start_token(self) -> str | None:
        """On a first start, make the admin token and print it once (to the journal).

        Only when serving ``DATA_DIR/current`` (the appliance's own data directory),
        ``admin_token_first_start`` is on and no token exists. The token stays on the
        display and the kiosk until an admin call uses it.

        Returns:
            The new token, or ``None`` when none was made.
        """
        if not self.settings.admin_token_first_start or self.settings.bundle:
            return None
        try:
            token = self.admin.ensure()
        except OSError as exc:
            log.warning("no admin token made: cannot write %s: %s; admin calls are accepted from this "
                        "device only", self.admin.path, exc.strerror)
            return None
        if token is not None:
            # stdout goes to the journal; this is the one time the token is written anywhere.
            print(f"Glimpse made its admin token (shown once here, and on the screen until first used): {token}",
                  flush=True)
            log.info("admin token made; its sha256 is in %s", self.admin.path)
            self._tell_panel("token")
        return token

    def _encoder_for_ingest(self):
        """The image tower of the model being served, loaded on first use."""
        from device.encoders import EncoderOptions, ImageEncoder

        with self._encoder_lock:
            bundle = self.searcher.bundle
            if (self._image_encoder is None
                    or self._image_encoder.spec.embedding_key != bundle.spec.embedding_key):
                self._image_encoder = _Serialised(ImageEncoder.create_from_options(
                    EncoderOptions(model_dir=bundle.model_dir, num_threads=1, verify=False)), self._embed_lock)
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

    def _start_lan(self, bridge) -> None:
        """Announce the web UI by mDNS and connect to Home Assistant, both in the background."""
        from device.mdns import start_advertising

        self.advertiser, self.advertised_by = start_advertising(self.settings)
        if bridge is not None:
            self.bridge = bridge
            bridge.start()

    def _stop_lan(self) -> None:
        for part, name in ((self.bridge, "the Home Assistant bridge"), (self.advertiser, "the mDNS announcement")):
            if part is None:
                continue
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - stopping must go on
                log.exception("stopping %s failed", name)

    def _tell_panel(self, event: str) -> None:
        self.state = {"error": "reload refused"}.get(event, event)
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
            # Results show the bundle's copy of a photo both hold: only the others count as searchable.
            held = sum(1 for item in self.delta.items if item.id in bundle)
            ingest["searchable"] = len(self.delta) - held
            ingest["in_bundle"] = held
            ingest["worker_alive"] = self.ingestor.alive
            ingest["paused"] = self.ingestor.paused
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
            "address": self.address,
            "advertised_by": (f"off ({self.advertiser.error})" if self.advertiser is not None and self.advertiser.error
                              else self.advertised_by),
            "home_assistant": self.bridge.describe() if self.bridge is not None else None,
        }

    @property
    def address(self) -> str:
        """The web UI's address for people: ``http://HOSTNAME.local:PORT/`` on the LAN."""
        from device.mdns import address

        return address(self.settings.host, self.settings.port)

    def serve(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit status.

        Raises:
            BundleInvalid: the bundle fails verification at start-up.
            HardwareInvalid: a front-panel setting cannot be meant.
            PortInUse: another program listens on the port.
            GlimpseError: the address cannot be listened on for another reason.
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
        from device.home_assistant import open_bridge
        from device.server import HttpServer, ServerLimits
        from device.web import create_app

        bridge = open_bridge(self, self.address)  # its settings are checked before anything loads
        self.load()
        self.start_ingest()
        settings = self.settings
        # A deep listen backlog: with a default of 5, a burst of new connections
        # overflows it and clients stall a whole SYN retransmit (1 s).
        try:
            server = HttpServer(create_app(self), settings.host, settings.port, threads=settings.threads,
                                limits=ServerLimits.from_settings(settings), backlog=128)
        except OSError as exc:
            raise _listen_error(settings.host, settings.port, exc) from None
        # Bound and listening: from here a request can be answered.
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
        self.state = "ready"
        # Both only start threads (mDNS probing, connecting to the broker): READY does not wait for them,
        # and /api/status, answerable from now on, already names them.
        self._start_lan(bridge)
        self.notifier.ready(f"serving {self.searcher.bundle.id} at {url}")
        print(f"Glimpse is serving {plural(len(self.searcher.bundle), 'photo')} at {url}", flush=True)
        self.first_start_token()
        status = 0
        last_ping = 0.0
        shown_disk_full = False
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
                if self.ingest_store is not None:
                    disk_full = self.ingest_store.disk_full is not None
                    if disk_full != shown_disk_full:  # the display says so, and stops saying so
                        shown_disk_full = disk_full
                        self.panel.post("disk full" if disk_full else "disk ok")
                # Ping when systemd asked for it, at most twice per interval: the panel
                # can wake the loop often, and a ping per wake would flood the socket.
                interval = self.notifier.watchdog_interval
                if interval and time.monotonic() - last_ping >= interval / 2:
                    self.notifier.watchdog()
                    last_ping = time.monotonic()
        finally:
            self._stopping.set()
            self.state = "stopping"
            self.notifier.stopping()
            self._stop_lan()
            log.info("stopping: finishing requests in flight (up to %ss)", settings.shutdown_timeout)
            server.stop(settings.shutdown_timeout)  # closes the socket, lets requests in flight finish
            thread.join(timeout=settings.shutdown_timeout + 5)
            if self.ingestor:
                self.ingestor.stop()  # finishes the photo in hand; queued ones wait for the next start
            if self.ingest_store:
                self.ingest_store.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            log.info("stopped")
        return status


class _Serialised:
    """An image encoder whose ``embed_image`` takes a lock: the ingest worker and
    photo searches share one interpreter, which is not safe to run twice at once."""

    def __init__(self, encoder, lock: threading.Lock):
        self._encoder, self._lock = encoder, lock

    def embed_image(self, image):
        with self._lock:
            return self._encoder.embed_image(image)

    def __getattr__(self, name):
        return getattr(self._encoder, name)


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



def _listen_error(host: str, port: int, exc: OSError) -> GlimpseError:
    """Why the server could not listen on ``host:port`` (``exc`` from binding), said for a person."""
    import errno

    from device.ports import holder_pid

    code = exc.errno
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if code == errno.EADDRINUSE:
        pid = holder_pid(port)
        by = f" (by PID {pid})" if pid is not None else ""
        return PortInUse(f"{where} is in use{by}; choose another with --port")
    if code == errno.EACCES:
        return GlimpseError(f"cannot listen on {where}: permission denied (ports below 1024 need root); "
                            "choose another with --port")
    if code == errno.EADDRNOTAVAIL:
        return GlimpseError(f"cannot listen on {where}: this machine has no such address; check --host")
    return GlimpseError(f"cannot listen on {where}: {exc}")

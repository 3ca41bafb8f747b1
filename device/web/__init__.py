"""The web UI and JSON API, as a Flask application factory.

Every asset is served from this package (no CDN): the appliance is offline.
Photos are served only through the bundle's manifest, so no request can reach
a file outside the bundle. Pages work without JavaScript; the script only makes
results appear as you type.

A search from the web UI also becomes what the device is showing (its
:class:`~device.slideshow.Slideshow`): the front-panel button steps through
those results and ``/kiosk``, the full-screen slideshow for an HDMI screen,
shows them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from urllib.parse import urlencode

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException

from device import __version__
from device.errors import BundleInvalid, GlimpseError, ItemNotFound, QueryInvalid
from device.search import Filters, check_page

log = logging.getLogger("glimpse.web")

#: Most results one API call returns.
API_MAX_K = 200
_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def create_app(daemon) -> Flask:
    """The Flask app serving ``daemon``'s current bundle.

    Args:
        daemon: a :class:`device.daemon.Daemon` (anything with ``searcher``,
            ``settings``, ``metrics``, ``slideshow``, ``status()`` and ``reload()``).
    """
    app = Flask(__name__)
    # Uploads: one request carries at most this much (Flask answers 413 beyond it).
    app.config["MAX_CONTENT_LENGTH"] = daemon.settings.max_upload_mb * 1024 * 1024
    app.json.sort_keys = False  # keep rank, id, path, score first, as the CLI prints them
    app.json.ensure_ascii = False
    settings = daemon.settings

    @app.context_processor
    def _globals():
        return {"ingest_on": daemon.ingest_store is not None}

    @app.template_filter("urlencode_page")
    def _urlencode_page(args, page: int) -> str:
        """The current query string with ``page`` set (for "More results")."""
        params = [(k, v) for k, v in args.items(multi=True) if k != "page"]
        return urlencode(params + [("page", str(page))])

    @app.before_request
    def _begin():
        g.started = time.perf_counter()
        g.searcher = daemon.searcher  # this request finishes on this bundle, even across a reload

    @app.after_request
    def _end(response):
        took = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        daemon.metrics.latency.labels(endpoint=endpoint).observe(took)
        if response.status_code >= 400:
            kind = {400: "bad_request", 404: "not_found"}.get(response.status_code, str(response.status_code))
            daemon.metrics.errors.labels(kind=kind).inc()
        response.headers["X-Glimpse-Took-Ms"] = f"{took * 1000:.1f}"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        log.info("%s %s %s %.1fms", request.method, request.full_path.rstrip("?"), response.status_code,
                 took * 1000)
        return response

    def _filters() -> Filters:
        args = request.args
        min_score = args.get("min_score")
        if min_score in (None, "") and settings.default_min_score:
            min_score = settings.default_min_score
        return Filters.parse(folder=args.get("folder"), taken_from=args.get("from"),
                             taken_to=args.get("to"), min_score=min_score)

    def _page() -> int:
        try:
            page = int(request.args.get("page", "0") or 0)
        except ValueError:
            raise QueryInvalid("page must be a whole number") from None
        if not 0 <= page <= 1000:
            raise QueryInvalid("page must be between 0 and 1000")
        return page

    def _render_results(template: str, run, **context):
        """Render a results page; a bad parameter shows its reason with status 400."""
        searcher = g.searcher
        size = settings.page_size
        error, results, page, filters = None, [], 0, Filters()
        try:
            page = _page()
            filters = _filters()
            results = run(searcher, size + 1, page * size, filters)
        except QueryInvalid as exc:
            error = str(exc)
        more = len(results) > size
        return render_template(
            template, results=results[:size], error=error, page=page, more=more, filters=filters,
            folders=searcher.folders(), bundle=searcher.bundle, version=__version__, args=request.args,
            **context), (400 if error else 200)

    @app.get("/")
    def index():
        query = request.args.get("q", "")
        if not query.strip():  # the start page: browse the library, filtered by folder and date
            searcher = g.searcher
            size = settings.page_size
            error, page, filters = None, 0, Filters()
            try:
                page = _page()
                filters = _filters()
            except QueryInvalid as exc:
                error = str(exc)
            listed = [item for item in searcher.all_items() if filters.admits(item)]
            items = listed[page * size:(page + 1) * size + 1]
            return render_template("index.html", query="", results=[], browse=items[:size], error=error, page=page,
                                   more=len(items) > size, filters=filters, folders=searcher.folders(),
                                   bundle=searcher.bundle, version=__version__, args=request.args), (400 if error else 200)

        def run(searcher, k, offset, filters):
            results = searcher.search(query, k=k, offset=offset, filters=filters)
            daemon.metrics.queries.labels(kind="text").inc()
            # What was searched in the web UI is what the button and the kiosk step through.
            daemon.slideshow.show(query.strip(), results[:settings.slideshow_results], "web")
            return results
        return _render_results("index.html", run, query=query, browse=[])

    @app.get("/items/<item_id>")
    def item_page(item_id: str):
        searcher = g.searcher
        item = _item_or_404(searcher, item_id)
        score = request.args.get("score")
        try:
            score = float(score) if score else None
        except ValueError:
            score = None
        return render_template("item.html", item=item, score=score, bundle=searcher.bundle,
                               has_preview=bool(item.preview), version=__version__, query=request.args.get("q", ""))

    @app.get("/similar/<item_id>")
    def similar_page(item_id: str):
        item = _item_or_404(g.searcher, item_id)
        if request.args.get("q", "").strip():  # a text search typed on this page
            return redirect(url_for("index", **request.args.to_dict(flat=True)))

        def run(searcher, k, offset, filters):
            results = searcher.similar(item.id, k=k, offset=offset, filters=filters)
            daemon.metrics.queries.labels(kind="similar").inc()
            return results
        return _render_results("index.html", run, query="", similar_to=item, browse=[])

    @app.get("/help")
    def help_page():
        return render_template("help.html", bundle=g.searcher.bundle, version=__version__, query="")

    @app.get("/thumbs/<item_id>")
    def thumb(item_id: str):
        searcher = g.searcher
        item = _item_or_404(searcher, item_id)
        return send_file(searcher.file(item.thumb), max_age=86400, conditional=True)

    @app.get("/images/<item_id>")
    def image(item_id: str):
        searcher = g.searcher
        item = _item_or_404(searcher, item_id)
        return send_file(searcher.file(item.preview or item.thumb), max_age=86400, conditional=True)

    @app.get("/originals/<item_id>")
    def original(item_id: str):
        searcher = g.searcher
        item = _item_or_404(searcher, item_id)
        if not item.original:
            abort(404, description="this bundle does not carry the original")
        return send_file(searcher.file(item.original), max_age=86400, conditional=True,
                         as_attachment=True, download_name=item.name)

    # --- adding photos on the device (device/ingest.py) --------------------------------

    def _store():
        if daemon.ingest_store is None:
            abort(404, description="adding photos on this device is off (setting ingest)")
        return daemon.ingest_store

    def _upload(files) -> list[dict]:
        """Store each uploaded file durably; a result per file (never all-or-nothing)."""
        from device.ingest import IngestBusy, IngestRefused

        store = _store()
        if not files:
            raise QueryInvalid("no files: send them as multipart form field 'files'")
        if store.counts()["queued"] >= settings.ingest_queue_max:
            raise IngestBusy(f"{settings.ingest_queue_max} photos are waiting to be added; try again later")
        results = []
        for upload in files:
            name = upload.filename or "photo"
            data = upload.read()
            try:
                added = store.add_upload(name, data)
            except IngestRefused as exc:
                results.append({"name": name, "status": "refused", "reason": str(exc)})
                continue
            results.append({"name": name, "status": added.status, "id": added.id, "path": added.path})
        daemon.metrics.added.inc(sum(1 for r in results if r["status"] == "queued"))
        if daemon.ingestor:
            daemon.ingestor.wake()
        return results

    @app.get("/add")
    def add_page():
        store = _store()
        return render_template("add.html", counts=store.counts(), needs_token=bool(settings.admin_token_sha256),
                               results=None, max_mb=settings.max_upload_mb, bundle=g.searcher.bundle,
                               version=__version__, query="")

    @app.post("/add")
    def add_form():
        store = _store()
        _require_admin(settings)
        results = _upload(request.files.getlist("files"))
        return render_template("add.html", counts=store.counts(), needs_token=bool(settings.admin_token_sha256),
                               results=results, max_mb=settings.max_upload_mb, bundle=g.searcher.bundle,
                               version=__version__, query=""), 202

    @app.post("/api/admin/upload")
    def api_upload():
        _require_admin(settings)
        return jsonify(_upload(request.files.getlist("files"))), 202

    @app.delete("/api/admin/items/<item_id>")
    def api_remove(item_id: str):
        _require_admin(settings)
        _store().remove(item_id)
        daemon.delta.refresh()
        return jsonify({"removed": item_id})

    # --- JSON API (docs/openapi.json) -------------------------------------------------

    def _api_page() -> tuple[int, int]:
        return check_page(request.args.get("k", "10"), request.args.get("offset", "0"), max_k=API_MAX_K)

    @app.get("/api/search")
    def api_search():
        query = request.args.get("q")
        if query is None:
            raise QueryInvalid("missing parameter q (the query text)")
        k, offset = _api_page()
        results = g.searcher.search(query, k=k, offset=offset, filters=_filters())
        daemon.metrics.queries.labels(kind="text").inc()
        if request.args.get("show") == "1":  # the web UI's instant search: make these what the device shows
            daemon.slideshow.show(query.strip(), results[:settings.slideshow_results], "web")
        return jsonify([r.to_json() for r in results])

    @app.get("/api/similar/<item_id>")
    def api_similar(item_id: str):
        k, offset = _api_page()
        results = g.searcher.similar(item_id, k=k, offset=offset, filters=_filters())
        daemon.metrics.queries.labels(kind="similar").inc()
        return jsonify([r.to_json() for r in results])

    @app.get("/api/items/<item_id>")
    def api_item(item_id: str):
        item = g.searcher.item(item_id)
        return jsonify({**item.to_json(), "folder": item.folder, "name": item.name,
                        "thumb_url": url_for("thumb", item_id=item.id),
                        "image_url": url_for("image", item_id=item.id)})

    # --- the kiosk: a full-screen slideshow for an HDMI screen (docs/kiosk.md) ---------

    def _slides(searcher, showing) -> tuple[list[dict], str, str]:
        """The slides of ``showing`` (with no results, the library's first photos),
        their kind and the title shown above them."""
        if showing.results:
            slides = [dict(_slide(r.item), score=round(float(r.score), 4)) for r in showing.results]
            return slides, "results", f"\u201c{showing.query}\u201d"
        items = searcher.bundle.items[:settings.slideshow_results]
        return [_slide(item) for item in items], "library", f"{len(searcher.bundle)} photos on this Glimpse"

    def _slide(item) -> dict:
        return {"id": item.id, "name": item.name, "path": item.path,
                "image": url_for("image", item_id=item.id), "thumb": url_for("thumb", item_id=item.id)}

    def _interval() -> float:
        raw = request.args.get("interval")
        if raw in (None, ""):
            return settings.kiosk_interval
        try:
            value = float(raw)
        except ValueError:
            raise QueryInvalid("interval must be a number of seconds") from None
        if not 0.2 <= value <= 3600:  # below a second only makes sense for tests and demos
            raise QueryInvalid("interval must be between 0.2 and 3600 seconds")
        return value

    @app.get("/kiosk")
    def kiosk():
        searcher = g.searcher
        query = request.args.get("q", "")
        error = None
        try:
            interval = _interval()
            if query.strip():
                results = searcher.search(query, k=settings.slideshow_results, filters=_filters())
                daemon.metrics.queries.labels(kind="text").inc()
                daemon.slideshow.show(query.strip(), results, "web")
        except QueryInvalid as exc:
            error, interval = str(exc), settings.kiosk_interval
        showing = daemon.slideshow.snapshot()
        slides, kind, title = _slides(searcher, showing)
        try:
            position = int(request.args.get("i", showing.position)) % max(1, len(slides))
        except ValueError:
            position = showing.position
        state = {"generation": showing.generation, "query": showing.query, "title": title, "position": position,
                 "kind": kind, "interval": interval, "slides": slides}
        next_url = url_for("kiosk", i=(position + 1) % max(1, len(slides)), interval=request.args.get("interval"))
        return render_template("kiosk.html", state=state, slide=slides[position] if slides else None,
                               error=error, bundle=searcher.bundle, next_url=next_url,
                               version=__version__), (400 if error else 200)

    @app.get("/api/kiosk")
    def api_kiosk():
        showing = daemon.slideshow.snapshot()
        slides, kind, title = _slides(g.searcher, showing)
        return jsonify({"generation": showing.generation, "query": showing.query, "title": title,
                        "position": showing.position, "source": showing.source, "kind": kind, "slides": slides})

    @app.get("/api/status")
    def api_status():
        return jsonify(daemon.status())

    @app.post("/api/admin/reload")
    def api_reload():
        _require_admin(settings)
        body = request.get_json(silent=True) if request.data else {}
        if not isinstance(body, dict):
            raise QueryInvalid("the body must be a JSON object, e.g. {\"bundle\": \"NAME\"}")
        name = body.get("bundle")
        if name is not None and not isinstance(name, str):
            raise QueryInvalid("bundle must be a string")
        try:
            return jsonify(daemon.reload(name))
        except (BundleInvalid, GlimpseError) as exc:
            return jsonify({"error": f"reload refused, the previous bundle keeps serving: {exc}"}), 409

    @app.get("/healthz")
    def healthz():
        bundle = g.searcher.bundle
        return jsonify({"status": "ok", "bundle_id": bundle.id, "items": len(bundle),
                        "model": bundle.spec.full_id, "version": __version__})

    @app.get("/metrics")
    def metrics():
        from device.metrics import CONTENT_TYPE

        return Response(daemon.metrics.render(), content_type=CONTENT_TYPE)

    # --- errors ------------------------------------------------------------------------

    @app.errorhandler(QueryInvalid)
    def _bad_query(exc):
        return jsonify({"error": str(exc)}), 400

    @app.errorhandler(GlimpseError)
    def _busy_or_refused(exc):
        from device.ingest import IngestBusy

        status = 503 if isinstance(exc, IngestBusy) else 400
        response = jsonify({"error": str(exc)})
        if status == 503:
            response.headers["Retry-After"] = "30"
        return response, status

    @app.errorhandler(ItemNotFound)
    def _not_found(exc):
        if request.path.startswith("/api/"):
            return jsonify({"error": str(exc)}), 404
        return render_template("error.html", message=str(exc), version=__version__, query=""), 404

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if request.path.startswith("/api/") or request.path in {"/healthz", "/metrics"}:
            response = jsonify({"error": exc.description})
            # The headers the status needs (RFC 9110): Allow on a 405, WWW-Authenticate on a 401.
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    response.headers.add(name, value)
            return response, exc.code
        return exc

    @app.errorhandler(Exception)
    def _unexpected(exc):  # a bug must never show a traceback to the user
        log.exception("unexpected error on %s", request.path)
        return jsonify({"error": "internal error; see the daemon's log"}), 500

    return app


def _item_or_404(searcher, item_id: str):
    try:
        return searcher.item(item_id)
    except ItemNotFound:
        abort(404)


def _require_admin(settings) -> None:
    """Admin calls need the token (when one is set) or come from loopback.

    The token comes as ``Authorization: Bearer TOKEN`` or, from the upload form,
    as a ``token`` field; only its sha256 is stored in the settings.
    """
    expected = settings.admin_token_sha256
    if expected:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""  # schemes are case-insensitive
        if not token and request.mimetype == "multipart/form-data":
            token = request.form.get("token", "")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not token or not hmac.compare_digest(digest, expected.lower()):
            abort(401, description="admin calls need Authorization: Bearer TOKEN")
    elif request.remote_addr not in _LOOPBACK:
        abort(403, description="admin calls are accepted from this device only (set admin_token_sha256)")

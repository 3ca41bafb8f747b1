"""The web UI and JSON API, as a Flask application factory.

Every asset is served from this package (no CDN): the appliance is offline.
Photos are served only through the bundle's manifest, so no request can reach
a file outside the bundle. Pages work without JavaScript; the script only makes
results appear as you type.

What the device shows (its :class:`~device.slideshow.Slideshow`: the
front-panel button steps through it and ``/kiosk``, the full-screen slideshow
for an HDMI screen, draws it) changes only when asked: the kiosk page's own
``q``, the button, and the admin's "Show on the screen" on a results or photo
page. Other people's searches stay on their own screens.

Every state-changing request is checked against cross-site request forgery
(:func:`~device.web.context.check_forgery`): a page of another site must not drive the appliance
through the browser of someone on the LAN, or the kiosk's own browser.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException

from device import __version__
from device.errors import (BundleInvalid, BundleNameInvalid, CameraUnavailable, GlimpseError, ImageUnreadable,
                           ItemNotFound, QueryInvalid)
from device.search import Filters, Result
from device.web.context import (CSRF_COOKIE, CSRF_FIELD, WebContext, admin_refusal, check_forgery,
                                content_disposition, csrf_token, error_page, is_local, item_or_404,
                                known, request_filters, request_page, require_admin, sent_photo, token_needed,
                                with_retry_after)
from device.web import api, kiosk
from device.wording import plural

__all__ = ["create_app", "content_disposition"]

log = logging.getLogger("glimpse.web")

def create_app(daemon: WebContext) -> Flask:
    """The Flask app serving ``daemon``'s current bundle.

    Args:
        daemon: a :class:`device.daemon.Daemon`, or anything else that is a
            :class:`~device.web.context.WebContext`.
    """
    app = Flask(__name__)
    # Uploads: one request carries at most this much (Flask answers 413 beyond it).
    app.config["MAX_CONTENT_LENGTH"] = daemon.settings.max_upload_mb * 1024 * 1024
    app.json.sort_keys = False  # keep rank, id, path, score first, as the CLI prints them
    app.json.ensure_ascii = False
    settings = daemon.settings

    @app.context_processor
    def _globals():
        return {"ingest_on": daemon.ingest_store is not None, "csrf_token": csrf_token,
                "needs_token": token_needed(daemon),
                "can_show": bool(daemon.admin.expected()) or is_local(request.remote_addr),
                "has_camera": daemon.has_camera,
                "plural": plural}

    @app.template_filter("urlencode_page")
    def _urlencode_page(args, page: int) -> str:
        """The current query string with ``page`` set (for "More results")."""
        return urlencode(known(args) + [("page", str(page))])

    @app.before_request
    def _begin():
        g.started = time.perf_counter()
        g.searcher = daemon.searcher  # this request finishes on this bundle, even across a reload
        check_forgery(settings)

    @app.after_request
    def _end(response):
        took = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        daemon.metrics.latency.labels(endpoint=endpoint).observe(took)
        if response.status_code >= 400:
            kind = {400: "bad_request", 404: "not_found"}.get(response.status_code, str(response.status_code))
            daemon.metrics.errors.labels(kind=kind).inc()
        if g.get("new_csrf"):  # a page with a form was rendered for a browser without the cookie
            response.set_cookie(CSRF_COOKIE, g.csrf, httponly=True, samesite="Strict", path="/")
        response.headers["X-Glimpse-Took-Ms"] = f"{took * 1000:.1f}"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response  # the access log line is the server's (device/server.py), its URL bounded

    def _render_results(template: str, run, **context):
        """Render a results page; a bad parameter shows its reason with status 400."""
        searcher = g.searcher
        size = settings.page_size
        error, results, page, filters = None, [], 0, Filters()
        try:
            page = request_page()
            filters = request_filters(settings)
            results = run(searcher, size + 1, page * size, filters)
        except QueryInvalid as exc:
            error = str(exc)
        more = len(results) > size
        results = results[:size]
        # Said on the first page only: a later page starts where the strong matches may have ended.
        no_good_match = (page == 0 and bool(results) and searcher.relevance is not None
                         and not any(r.strength == "strong" for r in results))
        return render_template(
            template, results=results, error=error, page=page, more=more, filters=filters,
            no_good_match=no_good_match,
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
                page = request_page()
                filters = request_filters(settings)
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
            return results
        return _render_results("index.html", run, query=query, browse=[])

    @app.get("/items/<item_id>")
    def item_page(item_id: str):
        searcher = g.searcher
        item = item_or_404(searcher, item_id)
        score = request.args.get("score")
        try:
            score = float(score) if score else None
        except ValueError:
            score = None
        return render_template("item.html", item=item, score=score, bundle=searcher.bundle,
                               has_preview=bool(item.preview), version=__version__, query=request.args.get("q", ""))

    @app.get("/similar/<item_id>")
    def similar_page(item_id: str):
        item = item_or_404(g.searcher, item_id)
        if request.args.get("q", "").strip():  # a text search typed on this page
            # Only the known parameters: others (endpoint, _external, _scheme...) are url_for's own.
            return redirect(url_for("index") + "?" + urlencode(known(request.args)))

        def run(searcher, k, offset, filters):
            results = searcher.similar(item.id, k=k, offset=offset, filters=filters)
            daemon.metrics.queries.labels(kind="similar").inc()
            return results
        return _render_results("index.html", run, query="", similar_to=item, browse=[])

    @app.get("/help")
    def help_page():
        return render_template("help.html", bundle=g.searcher.bundle, relevance=g.searcher.relevance,
                               version=__version__, query="", about=daemon.status())

    @app.get("/thumbs/<item_id>")
    def thumb(item_id: str):
        searcher = g.searcher
        item = item_or_404(searcher, item_id)
        return send_file(searcher.file(item.thumb), max_age=86400, conditional=True)

    @app.get("/images/<item_id>")
    def image(item_id: str):
        searcher = g.searcher
        item = item_or_404(searcher, item_id)
        return send_file(searcher.file(item.preview or item.thumb), max_age=86400, conditional=True)

    @app.get("/originals/<item_id>")
    def original(item_id: str):
        searcher = g.searcher
        item = item_or_404(searcher, item_id)
        if not item.original:
            abort(404, description="this bundle does not carry the original")
        response = send_file(searcher.file(item.original), max_age=86400, conditional=True)
        response.headers["Content-Disposition"] = content_disposition(item.name)
        return response

    # --- adding photos on the device (device/ingest.py) --------------------------------

    def _store():
        if daemon.ingest_store is None:
            abort(404, description="adding photos on this device is off (setting ingest): set ingest = on, "
                                   "or leave it on auto and serve DATA_DIR/current rather than --bundle")
        return daemon.ingest_store

    def _upload(files) -> tuple[list[dict], int]:
        """Store each uploaded file durably; a result per file (never all-or-nothing).

        The queue limit is checked for each photo, so a request can be partly accepted;
        each refused file says why.

        Returns:
            The results and the status to answer with: 202 when any file was accepted
            (queued, or already known); when every file was refused, 507 if the disk
            is full, 503 if the queue is, else 400.
        """
        from device.ingest import IngestBusy, IngestDiskFull, IngestRefused

        store = _store()
        if not files:
            raise QueryInvalid("no files: send them as multipart form field 'files'")
        results, causes = [], set()
        for upload in files:
            name = upload.filename or "photo"
            data = upload.read()
            try:
                added = store.add_upload(name, data, in_bundle=g.searcher.bundle.__contains__,
                                         queue_max=settings.ingest_queue_max)
            except IngestRefused as exc:
                cause = ("disk_full" if isinstance(exc, IngestDiskFull)
                         else "busy" if isinstance(exc, IngestBusy) else "invalid")
                causes.add(cause)
                results.append({"name": name, "status": "refused", "reason": str(exc), "cause": cause})
                continue
            results.append({"name": name, "status": added.status, "id": added.id, "path": added.path})
        daemon.metrics.added.inc(sum(1 for r in results if r["status"] == "queued"))
        if daemon.ingestor:
            daemon.ingestor.wake()
        if any(r["status"] != "refused" for r in results):
            return results, 202
        return results, 507 if "disk_full" in causes else 503 if "busy" in causes else 400

    def _add_page(results=None, error=None, status=200):
        return render_template("add.html", counts=_store().counts(), results=results, error=error,
                               max_mb=settings.max_upload_mb, bundle=g.searcher.bundle, version=__version__,
                               query=""), status

    @app.get("/add")
    def add_page():
        return _add_page()

    @app.post("/add")
    def add_form():
        _store()
        refusal = admin_refusal(daemon)
        if refusal:  # the page again, saying why, with the token field (the browser cannot keep the files)
            return with_retry_after(_add_page(error=refusal.reason + ": choose the photos again",
                                               status=refusal.status), refusal)
        results, status = _upload(request.files.getlist("files"))
        response = Response(*_add_page(results=results, status=status))
        if status == 503:
            response.headers["Retry-After"] = "30"
        return response

    @app.post("/api/admin/upload")
    def api_upload():
        require_admin(daemon)
        results, status = _upload(request.files.getlist("files"))
        if status == 202:
            return jsonify(results), 202
        # Every file was refused: an error, with each file's reason.
        reasons = {507: "the device's disk is full; free some space and try again",
                   503: "too many photos are waiting to be added; try again later",
                   400: "no file could be added"}
        response = jsonify({"error": reasons[status], "results": results})
        if status == 503:
            response.headers["Retry-After"] = "30"
        return response, status

    @app.delete("/api/admin/items/<item_id>")
    def api_remove(item_id: str):
        require_admin(daemon)
        _store().remove(item_id)
        daemon.delta.refresh()
        return jsonify({"removed": item_id})

    # --- "What is this like?": a photo from a phone's camera, or the device's own ----------

    @app.post("/photo")
    def photo_search():
        """The search-by-photo form (a phone's camera): a results page; the photo is not kept."""
        searcher = g.searcher
        error, results, status = None, [], 200
        try:
            results = daemon.similar_to_photo(sent_photo(daemon), k=settings.page_size)
        except (QueryInvalid, ImageUnreadable) as exc:
            error, status = (exc.reason if isinstance(exc, ImageUnreadable) else str(exc)), 400
        return render_template("index.html", results=results, error=error, page=0, more=False, filters=Filters(),
                               folders=searcher.folders(), bundle=searcher.bundle, version=__version__,
                               args=request.args, query="", browse=[], photo_search=True), status

    def _look() -> dict:
        try:
            showing = daemon.look()
        except CameraUnavailable as exc:
            abort(409, description=str(exc))
        return {"query": showing.query, "count": len(showing.results), "generation": showing.generation}

    @app.post("/api/admin/camera")
    def api_camera():
        require_admin(daemon)
        return jsonify(_look())

    @app.post("/camera")
    def camera_form():
        """The "What is this like?" button of the device's camera: a page saying what the screen shows."""
        refusal = admin_refusal(daemon)
        if refusal:
            return with_retry_after(error_page(refusal.status, refusal.reason), refusal)
        return render_template("shown.html", shown=_look(), back=url_for("index"), version=__version__, query="")

    # --- "Show on the screen": an admin puts results or a photo on the device ---------

    def _show(fields) -> dict:
        """Put what ``fields`` name on the screen; what the API answers."""
        fields = {k: v for k, v in fields.items() if v not in (None, "")}
        unknown = set(fields) - {"q", "folder", "from", "to", "min_score", "similar", "id"}
        if unknown:
            raise QueryInvalid(f"unknown field(s) {', '.join(sorted(unknown))}: send q (with folder, from, to, "
                               "min_score), similar or id")
        if any(not isinstance(v, str) for v in fields.values()):
            raise QueryInvalid("every field must be a string")
        chosen = [key for key in ("q", "similar", "id") if key in fields]
        if len(chosen) != 1:
            raise QueryInvalid("send exactly one of q (a search), similar (an item id) or id (one photo)")
        filters = Filters.parse(folder=fields.get("folder"), taken_from=fields.get("from"),
                                taken_to=fields.get("to"), min_score=fields.get("min_score"))
        if "q" in fields:
            showing = daemon.show(fields["q"], filters=filters)
        elif "similar" in fields:
            item = g.searcher.item(fields["similar"])
            showing = daemon.show(f"like {item.name}", filters=filters, similar_to=item.id, kind="similar")
        else:
            item = g.searcher.item(fields["id"])
            showing = daemon.slideshow.show(item.name, [Result(rank=1, score=1.0, item=item)], "web")
        return {"query": showing.query, "count": len(showing.results), "generation": showing.generation}

    @app.post("/api/admin/show")
    def api_show():
        require_admin(daemon)
        body = request.get_json(silent=True) if request.data else None
        if not isinstance(body, dict):
            raise QueryInvalid("the body must be a JSON object, e.g. {\"q\": \"a cat\"}")
        return jsonify(_show(body))

    @app.post("/show")
    def show_form():
        """The no-JavaScript "Show on the screen" button: a page saying what the screen shows."""
        refusal = admin_refusal(daemon)
        if refusal:
            return with_retry_after(error_page(refusal.status, refusal.reason), refusal)
        fields = request.form.to_dict(flat=True)
        for checked in (CSRF_FIELD, "token"):  # checked already, not part of what to show
            fields.pop(checked, None)
        shown = _show(fields)
        return render_template("shown.html", shown=shown, back=_back_link(request.form), version=__version__,
                               query="")

    def _back_link(fields) -> str:
        if fields.get("id"):
            return url_for("item_page", item_id=fields["id"])
        if fields.get("similar"):
            return url_for("similar_page", item_id=fields["similar"]) + "?" + urlencode(known(fields, ("q",)))
        return url_for("index") + "?" + urlencode(known(fields))

    @app.post("/api/admin/reload")
    def api_reload():
        require_admin(daemon)
        body = request.get_json(silent=True) if request.data else {}
        if not isinstance(body, dict):
            raise QueryInvalid("the body must be a JSON object, e.g. {\"bundle\": \"NAME\"}")
        name = body.get("bundle")
        if name is not None and not isinstance(name, str):
            raise QueryInvalid("bundle must be a string")
        try:
            return jsonify(daemon.reload(name))
        except BundleNameInvalid as exc:  # a bad request, counted as a refused reload by reload()
            return jsonify({"error": f"reload refused, the previous bundle keeps serving: {exc}"}), 400
        except (BundleInvalid, GlimpseError) as exc:
            return jsonify({"error": f"reload refused, the previous bundle keeps serving: {exc}"}), 409

    api.register(app, daemon)
    kiosk.register(app, daemon)

    # --- errors ------------------------------------------------------------------------

    @app.errorhandler(QueryInvalid)
    def _bad_query(exc):
        return error_page(400, str(exc))

    @app.errorhandler(GlimpseError)
    def _busy_or_refused(exc):
        from device.ingest import IngestBusy

        status = 503 if isinstance(exc, IngestBusy) else 400
        response, status = error_page(status, str(exc))
        if status == 503:
            response = app.make_response((response, status))
            response.headers["Retry-After"] = "30"
        return response, status

    @app.errorhandler(ItemNotFound)
    def _not_found(exc):
        return error_page(404, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if exc.code is None or exc.code < 400:  # a redirect raised as an exception: pass it on
            return exc
        response, status = error_page(exc.code, exc.description or exc.name)
        response = app.make_response((response, status))
        for name, value in exc.get_headers():  # e.g. Allow on a 405, WWW-Authenticate on a 401
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc):  # a bug must never show a traceback to the user
        log.exception("unexpected error on %s", request.path)
        return error_page(500, "internal error; see the daemon's log")

    return app

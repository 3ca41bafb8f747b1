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

from flask import Flask, abort, g, redirect, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException

from device import __version__
from device.errors import GlimpseError, ImageUnreadable, ItemNotFound, QueryInvalid
from device.search import Filters
from device.web.context import (CSRF_COOKIE, WebContext, check_forgery, content_disposition, csrf_token, error_page,
                                is_local, item_or_404, known, request_filters, request_page, sent_photo, token_needed)
from device.web import admin, api, kiosk
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

    admin.register(app, daemon)
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

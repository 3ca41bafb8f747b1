"""The web UI and JSON API, as a Flask application factory.

Every asset is served from this package (no CDN): the appliance is offline.
:func:`create_app` assembles the app from one module per audience:

- :mod:`device.web.context`: what the web layer needs of the daemon (the
  :class:`~device.web.context.WebContext` protocol) and the helpers all routes
  share (error pages, admin checks, CSRF, the parameters of a results page);
- :mod:`device.web.pages`: the HTML pages (search, browse, a photo, similar, help)
  and the photos themselves;
- :mod:`device.web.api`: the JSON API (docs/openapi.json), health and metrics;
- :mod:`device.web.admin`: the routes that change the appliance (adding photos,
  the device's camera, "Show on the screen", reload);
- :mod:`device.web.kiosk`: the full-screen slideshow for an HDMI screen.

This module holds what applies to every request: the template globals, the
forgery check before it, the metrics and headers after it, and the error pages.

What the device shows (its :class:`~device.slideshow.Slideshow`: the
front-panel button steps through it and ``/kiosk``, the full-screen slideshow
for an HDMI screen, draws it) changes only when asked: the kiosk page's own
``q``, the button, and the admin's "Show on the screen" on a results or photo
page. Other people's searches stay on their own screens.

Every state-changing request is checked against cross-site request forgery
(:func:`~device.web.context.check_forgery`): a page of another site must not
drive the appliance through the browser of someone on the LAN, or the kiosk's
own browser.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from device.errors import GlimpseError, IngestBusy, ItemNotFound, QueryInvalid
from device.web import admin, api, kiosk, pages
from device.web.context import (CSRF_COOKIE, WebContext, check_forgery, content_disposition, csrf_token, error_page,
                                is_local, known, token_needed)
from device.wording import plural

__all__ = ["WebContext", "content_disposition", "create_app"]

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
        if request.routing_exception is None:  # no route or method: the 404 or 405 says so first
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

    pages.register(app, daemon)
    admin.register(app, daemon)
    api.register(app, daemon)
    kiosk.register(app, daemon)

    # --- errors ------------------------------------------------------------------------

    @app.errorhandler(QueryInvalid)
    def _bad_query(exc):
        return error_page(400, str(exc))

    @app.errorhandler(GlimpseError)
    def _busy_or_refused(exc):
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

"""The web UI and JSON API, as a Flask application factory.

Every asset is served from this package (no CDN): the appliance is offline.
Thumbnails are served only through the bundle's manifest, so no request can
reach a file outside the bundle.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, abort, g, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException

from device import __version__
from device.errors import GlimpseError, ItemNotFound, QueryInvalid
from device.search import Searcher

log = logging.getLogger("glimpse.web")

#: Results shown per page in the HTML UI.
PAGE_SIZE = 24


def create_app(searcher: Searcher) -> Flask:
    """The Flask app serving ``searcher``'s bundle.

    Routes: ``/`` (search page, works without JavaScript), ``/thumbs/<id>``,
    ``/api/search?q=&k=&offset=``, ``/healthz``.
    """
    app = Flask(__name__)
    app.json.sort_keys = False  # keep rank, id, path, score first, as the CLI prints them
    app.json.ensure_ascii = False
    app.extensions["glimpse.searcher"] = searcher

    @app.before_request
    def _start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def _log_request(response):
        took = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        response.headers["X-Glimpse-Took-Ms"] = f"{took:.1f}"
        log.info("%s %s %s %.1fms", request.method, request.full_path.rstrip("?"), response.status_code, took)
        return response

    @app.get("/")
    def index():
        query = request.args.get("q", "")
        error, results, more = None, [], False
        if query:
            try:
                page = max(0, int(request.args.get("page", "0")))
                results = searcher.search(query, k=PAGE_SIZE + 1, offset=page * PAGE_SIZE)
            except (GlimpseError, ValueError) as exc:
                error = str(exc)
                page = 0
            more = len(results) > PAGE_SIZE
            results = results[:PAGE_SIZE]
        else:
            page = 0
        status = 400 if error else 200
        return render_template("index.html", query=query, results=results, error=error,
                               page=page, more=more, bundle=searcher.bundle, version=__version__), status

    @app.get("/thumbs/<item_id>")
    def thumb(item_id: str):
        try:
            item = searcher.bundle.item(item_id)
            path = searcher.bundle.file(item.thumb)
        except ItemNotFound:
            abort(404)
        response = send_file(path, max_age=86400, conditional=True)
        return response

    @app.get("/api/search")
    def api_search():
        query = request.args.get("q")
        if query is None:
            raise QueryInvalid("missing parameter q (the query text)")
        results = searcher.search(query, k=request.args.get("k", "10"), offset=request.args.get("offset", "0"))
        return jsonify([r.to_json() for r in results])

    @app.get("/healthz")
    def healthz():
        bundle = searcher.bundle
        return jsonify({"status": "ok", "bundle_id": bundle.id, "items": len(bundle),
                        "model": bundle.spec.full_id, "version": __version__})

    @app.errorhandler(QueryInvalid)
    def _bad_query(exc):
        return jsonify({"error": str(exc)}), 400

    @app.errorhandler(ItemNotFound)
    def _not_found(exc):
        return jsonify({"error": str(exc)}), 404

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.description}), exc.code
        return exc

    @app.errorhandler(Exception)
    def _unexpected(exc):  # a bug must not show a traceback to the user
        log.exception("unexpected error on %s", request.path)
        return jsonify({"error": "internal error; see the daemon's log"}), 500

    return app

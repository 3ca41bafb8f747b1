"""The JSON API (docs/openapi.json): search, similar photos, items, status and health.

For scripts and the page's own script; every error is JSON too
(:func:`~device.web.context.error_page`). The admin API (``/api/admin/...``)
is in :mod:`device.web.admin`.
"""

from __future__ import annotations

from flask import Flask, Response, g, jsonify, request, url_for

from device import __version__
from device.errors import QueryInvalid
from device.search import check_page
from device.web.context import WebContext, request_filters, sent_photo

#: Most results one API call returns.
API_MAX_K = 200


def register(app: Flask, ctx: WebContext) -> None:
    """Add the JSON API's routes to ``app``, answering from ``ctx``."""
    settings = ctx.settings

    def _api_page() -> tuple[int, int]:
        return check_page(request.args.get("k", "10"), request.args.get("offset", "0"), max_k=API_MAX_K)

    @app.get("/api/search")
    def api_search():
        query = request.args.get("q")
        if query is None:
            raise QueryInvalid("missing parameter q (the query text)")
        k, offset = _api_page()
        results = g.searcher.search(query, k=k, offset=offset, filters=request_filters(settings))
        ctx.metrics.queries.labels(kind="text").inc()
        return jsonify([r.to_json() for r in results])

    @app.get("/api/similar/<item_id>")
    def api_similar(item_id: str):
        k, offset = _api_page()
        results = g.searcher.similar(item_id, k=k, offset=offset, filters=request_filters(settings))
        ctx.metrics.queries.labels(kind="similar").inc()
        return jsonify([r.to_json() for r in results])

    @app.get("/api/items/<item_id>")
    def api_item(item_id: str):
        item = g.searcher.item(item_id)
        return jsonify({**item.to_json(), "folder": item.folder, "name": item.name,
                        "thumb_url": url_for("thumb", item_id=item.id),
                        "image_url": url_for("image", item_id=item.id)})

    @app.post("/api/search/photo")
    def api_search_photo():
        k, offset = _api_page()
        results = ctx.similar_to_photo(sent_photo(ctx), k=k, offset=offset, filters=request_filters(settings))
        return jsonify([r.to_json() for r in results])

    @app.get("/api/status")
    def api_status():
        return jsonify(ctx.status())

    @app.get("/healthz")
    def healthz():
        bundle = g.searcher.bundle
        return jsonify({"status": "ok", "bundle_id": bundle.id, "items": len(bundle),
                        "model": bundle.spec.full_id, "version": __version__})

    @app.get("/metrics")
    def metrics():
        from device.metrics import CONTENT_TYPE

        return Response(ctx.metrics.render(), content_type=CONTENT_TYPE)

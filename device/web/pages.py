"""The HTML pages people see: search, browse, a photo, similar photos, help.

Pages work without JavaScript; the script only makes results appear as you
type. Photos are served only through the bundle's manifest (``/thumbs``,
``/images``, ``/originals``), so no request can reach a file outside the bundle.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Flask, abort, g, redirect, render_template, request, send_file, url_for

from device import __version__
from device.errors import ImageUnreadable, QueryInvalid
from device.search import Filters
from device.web.context import (WebContext, content_disposition, item_or_404, known, request_filters, request_page,
                                sent_photo)


def register(app: Flask, ctx: WebContext) -> None:
    """Add the HTML pages to ``app``, searching ``ctx``'s current bundle."""
    settings = ctx.settings

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
            ctx.metrics.queries.labels(kind="text").inc()
            return results
        return _render_results("index.html", run, query=query, browse=[])

    @app.get("/items/<item_id>")
    def item_page(item_id: str):
        searcher = g.searcher
        item = item_or_404(searcher, item_id)
        sent = request.args.get("score")
        try:
            score = float(sent) if sent else None
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
            ctx.metrics.queries.labels(kind="similar").inc()
            return results
        return _render_results("index.html", run, query="", similar_to=item, browse=[])

    @app.get("/help")
    def help_page():
        return render_template("help.html", bundle=g.searcher.bundle, relevance=g.searcher.relevance,
                               version=__version__, query="", about=ctx.status())

    # --- the photos themselves, served only through the bundle's manifest ---------------------

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

    # --- "What is this like?" with a phone's camera: a results page ---------------------------

    @app.post("/photo")
    def photo_search():
        """The search-by-photo form (a phone's camera): a results page; the photo is not kept."""
        searcher = g.searcher
        error, results, status = None, [], 200
        try:
            results = ctx.similar_to_photo(sent_photo(ctx), k=settings.page_size)
        except (QueryInvalid, ImageUnreadable) as exc:
            error, status = (exc.reason if isinstance(exc, ImageUnreadable) else str(exc)), 400
        return render_template("index.html", results=results, error=error, page=0, more=False, filters=Filters(),
                               folders=searcher.folders(), bundle=searcher.bundle, version=__version__,
                               args=request.args, query="", browse=[], photo_search=True), status

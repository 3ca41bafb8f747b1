"""The kiosk: a full-screen slideshow for an HDMI screen (docs/kiosk.md).

``/kiosk`` draws what the device shows (its :class:`~device.slideshow.Slideshow`);
``/api/kiosk`` is what the page's script polls. Only the kiosk page's own ``q``
changes what the screen shows, and only from a page of this appliance.
"""

from __future__ import annotations

from flask import Flask, abort, g, jsonify, render_template, request, url_for

from device import __version__
from device.errors import QueryInvalid
from device.web.context import WebContext, from_another_site, is_local, request_filters
from device.wording import plural


def register(app: Flask, ctx: WebContext) -> None:
    """Add the kiosk page and its API to ``app``, serving ``ctx``'s slideshow."""
    settings = ctx.settings

    def _slides(searcher, showing) -> tuple[list[dict], str, str]:
        """The slides of ``showing`` (with no results, the library's first photos),
        their kind and the title shown above them."""
        if showing.results:
            slides = [dict(_slide(r.item), score=round(float(r.score), 4)) for r in showing.results]
            return slides, "results", f"\u201c{showing.query}\u201d"
        items = searcher.bundle.items[:settings.slideshow_results]
        total = len(searcher.bundle)
        # The title counts what the slideshow steps through ("1 / 12"), not more.
        title = (f"{plural(total, 'photo')} on this Glimpse" if len(items) == total
                 else f"The first {len(items)} of {total} photos on this Glimpse")
        return [_slide(item) for item in items], "library", title

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
            if query.strip():  # the screen's own query (the kiosk unit's URL)
                if from_another_site(settings):  # a GET, but it changes what the screen shows
                    abort(403, description="refused: a page of another site cannot change what the screen "
                                           "shows; open /kiosk?q=... yourself")
                ctx.show(query, filters=request_filters(settings))
        except QueryInvalid as exc:
            error, interval = str(exc), settings.kiosk_interval
        showing = ctx.slideshow.snapshot()
        slides, kind, title = _slides(searcher, showing)
        try:
            position = int(request.args.get("i", showing.position)) % max(1, len(slides))
        except ValueError:
            position = showing.position
        state = {"generation": showing.generation, "query": showing.query, "title": title, "position": position,
                 "kind": kind, "interval": interval, "slides": slides, "admin_token": _screen_token(),
                 "address": ctx.address}
        next_url = url_for("kiosk", i=(position + 1) % max(1, len(slides)), interval=request.args.get("interval"))
        return render_template("kiosk.html", state=state, slide=slides[position] if slides else None,
                               error=error, bundle=searcher.bundle, next_url=next_url,
                               version=__version__), (400 if error else 200)

    @app.get("/api/kiosk")
    def api_kiosk():
        showing = ctx.slideshow.snapshot()
        slides, kind, title = _slides(g.searcher, showing)
        return jsonify({"generation": showing.generation, "query": showing.query, "title": title,
                        "position": showing.position, "source": showing.source, "kind": kind, "slides": slides,
                        "admin_token": _screen_token(), "address": ctx.address})

    def _screen_token() -> str | None:
        """The first start's admin token, for the kiosk's own screen: only to this device
        (the kiosk browser runs on it), never to another machine on the network."""
        token = ctx.admin.first_token
        return token if token and is_local(request.remote_addr) else None

"""The admin's routes: everything that changes the appliance.

Adding and removing photos (``/add``, ``/api/admin/upload``,
``/api/admin/items/<id>``, :mod:`device.ingest`), "What is this like?" with the
device's own camera (``/camera``, ``/api/admin/camera``), "Show on the screen"
(``/show``, ``/api/admin/show``) and reloading the bundle (``/api/admin/reload``).
Each JSON call needs the admin token or a request from this device
(:func:`~device.web.context.require_admin`); each no-JavaScript form shows the
refusal as a page instead (:func:`~device.web.context.admin_refusal`).
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Flask, Response, abort, g, jsonify, render_template, request, url_for

from device import __version__
from device.errors import (BundleInvalid, BundleNameInvalid, CameraUnavailable, GlimpseError, IngestBusy, IngestDiskFull,
                           IngestRefused, QueryInvalid)
from device.search import Filters, Result
from device.web.context import (CSRF_FIELD, WebContext, admin_refusal, error_page, known, require_admin,
                                with_retry_after)


def register(app: Flask, ctx: WebContext) -> None:
    """Add the admin's routes to ``app``, changing ``ctx``."""
    settings = ctx.settings

    def _store():
        if ctx.ingest_store is None:
            abort(404, description="adding photos on this device is off (setting ingest): set ingest = on, "
                                   "or leave it on auto and serve DATA_DIR/current rather than --bundle")
        return ctx.ingest_store

    def _upload(files) -> tuple[list[dict], int]:
        """Store each uploaded file durably; a result per file (never all-or-nothing).

        The queue limit is checked for each photo, so a request can be partly accepted;
        each refused file says why.

        Returns:
            The results and the status to answer with: 202 when any file was accepted
            (queued, or already known); when every file was refused, 507 if the disk
            is full, 503 if the queue is, else 400.
        """
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
        ctx.metrics.added.inc(sum(1 for r in results if r["status"] == "queued"))
        if ctx.ingestor:
            ctx.ingestor.wake()
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
        refusal = admin_refusal(ctx)
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
        require_admin(ctx)
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
        require_admin(ctx)
        _store().remove(item_id)
        ctx.delta.refresh()
        return jsonify({"removed": item_id})

    # --- "What is this like?" with the device's own camera -----------------------------------

    def _look() -> dict:
        try:
            showing = ctx.look()
        except CameraUnavailable as exc:
            abort(409, description=str(exc))
        return {"query": showing.query, "count": len(showing.results), "generation": showing.generation}

    @app.post("/api/admin/camera")
    def api_camera():
        require_admin(ctx)
        return jsonify(_look())

    @app.post("/camera")
    def camera_form():
        """The "What is this like?" button of the device's camera: a page saying what the screen shows."""
        refusal = admin_refusal(ctx)
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
            showing = ctx.show(fields["q"], filters=filters)
        elif "similar" in fields:
            item = g.searcher.item(fields["similar"])
            showing = ctx.show(f"like {item.name}", filters=filters, similar_to=item.id, kind="similar")
        else:
            item = g.searcher.item(fields["id"])
            showing = ctx.slideshow.show(item.name, [Result(rank=1, score=1.0, item=item)], "web")
        return {"query": showing.query, "count": len(showing.results), "generation": showing.generation}

    @app.post("/api/admin/show")
    def api_show():
        require_admin(ctx)
        body = request.get_json(silent=True) if request.data else None
        if not isinstance(body, dict):
            raise QueryInvalid("the body must be a JSON object, e.g. {\"q\": \"a cat\"}")
        return jsonify(_show(body))

    @app.post("/show")
    def show_form():
        """The no-JavaScript "Show on the screen" button: a page saying what the screen shows."""
        refusal = admin_refusal(ctx)
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
        require_admin(ctx)
        body = request.get_json(silent=True) if request.data else {}
        if not isinstance(body, dict):
            raise QueryInvalid("the body must be a JSON object, e.g. {\"bundle\": \"NAME\"}")
        name = body.get("bundle")
        if name is not None and not isinstance(name, str):
            raise QueryInvalid("bundle must be a string")
        try:
            return jsonify(ctx.reload(name))
        except BundleNameInvalid as exc:  # a bad request, counted as a refused reload by reload()
            return jsonify({"error": f"reload refused, the previous bundle keeps serving: {exc}"}), 400
        except (BundleInvalid, GlimpseError) as exc:
            return jsonify({"error": f"reload refused, the previous bundle keeps serving: {exc}"}), 409

"""What the web layer needs from the daemon, and the helpers every route module shares.

:class:`WebContext` names exactly what the routes use of the daemon
(:class:`device.daemon.Daemon` is one), so the web layer does not depend on the
whole daemon. The helpers here are used by more than one audience's module
(:mod:`~device.web.pages`, :mod:`~device.web.api`, :mod:`~device.web.admin`,
:mod:`~device.web.kiosk`): the error page, the admin checks, the CSRF checks,
the result-page parameters and the search filters of a request.

Every state-changing request is checked against cross-site request forgery
(:func:`check_forgery`): a page of another site must not drive the appliance
through the browser of someone on the LAN, or the kiosk's own browser.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
import secrets
import socket
import typing
from urllib.parse import quote, urlsplit

from flask import abort, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import TooManyRequests

from device import __version__
from device.errors import QueryInvalid
from device.search import Filters

if typing.TYPE_CHECKING:
    from PIL.Image import Image

    from device.admin import AttemptLimiter, TokenStore
    from device.delta import DeltaLayer
    from device.ingest import IngestStore, Ingestor
    from device.metrics import Metrics
    from device.bundle import Item
    from device.search import Result, Searcher
    from device.settings import Settings
    from device.slideshow import Showing, Slideshow

#: The query parameters of a results page; nothing else is carried into a link or redirect.
RESULT_PARAMS = ("q", "folder", "from", "to", "min_score")
#: Methods that change something, so are checked against request forgery.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Bodies a page of another site can send without the browser asking first (CORS
#: "simple" requests): these need a CSRF token.
SIMPLE_BODIES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
#: The cookie and form field of the CSRF token (a double-submitted random value).
CSRF_COOKIE = "glimpse_csrf"
CSRF_FIELD = "csrf_token"
#: A header no page of another site can send without a CORS preflight (which the
#: appliance never grants): scripts such as ``glimpse ingest`` send it instead of a token.
CLIENT_HEADER = "X-Glimpse-Client"


class WebContext(typing.Protocol):
    """What the web layer uses of the daemon (:class:`device.daemon.Daemon`).

    Attributes:
        settings: the effective settings (page size, upload limit, kiosk interval...).
        metrics: the Prometheus counters the routes count into.
        slideshow: what the device shows (the kiosk page draws it).
        admin: the admin token's store; attempts: wrong tokens per client address.
        ingest_store, ingestor, delta: adding photos on the device (``None`` when off).
    """

    settings: Settings
    metrics: Metrics
    slideshow: Slideshow
    admin: TokenStore
    attempts: AttemptLimiter
    ingest_store: IngestStore | None
    ingestor: Ingestor | None
    delta: DeltaLayer | None

    @property
    def searcher(self) -> Searcher:
        """The searcher serving now (a request holds on to it until it ends)."""

    @property
    def address(self) -> str:
        """The web UI's address for people (shown on the kiosk)."""

    @property
    def has_camera(self) -> bool:
        """Whether the device's own camera can take a photo to search by."""

    def status(self) -> dict:
        """What ``/api/status`` answers."""

    def reload(self, bundle_name: str | None = None) -> dict:
        """Load the current (or the named) bundle; the old one serves if it is refused."""

    def show(self, query: str, *, filters: Filters | None = None, similar_to: str | None = None,
             source: str = "web", kind: str = "text") -> Showing:
        """Search, count the search, and put the results on the device's screen."""

    def look(self) -> Showing:
        """Take a photo with the device's camera and show the photos most like it."""

    def decode_photo(self, data: bytes, name: str = "photo") -> Image:
        """A photo sent to search by, decoded (raises ImageUnreadable)."""

    def similar_to_photo(self, image: Image, k: int = 10, offset: int = 0,
                         filters: Filters | None = None) -> list[Result]:
        """The photos most like ``image``, best first."""


# --- errors ----------------------------------------------------------------------------

#: The heading of the error page, by status.
ERROR_TITLES = {
    400: "That request cannot be answered",
    401: "The admin token is needed",
    403: "Not allowed from here",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible now",
    413: "Too large",
    429: "Too many wrong tokens",
    500: "Something went wrong",
    503: "Busy",
}


def wants_json() -> bool:
    """Whether this request is the JSON API's (its errors are JSON too)."""
    return request.path.startswith("/api/") or request.path in {"/healthz", "/metrics"}


def error_page(status: int, message: str):
    """The app's own page for an error: the reason, and a way back (JSON for the API)."""
    if wants_json():
        return jsonify({"error": message}), status
    return render_template("error.html", status=status, title=ERROR_TITLES.get(status, "Something went wrong"),
                           message=message, version=__version__, query=""), status


def with_retry_after(page, refusal: Refusal):
    """``page`` (a body and status) with ``Retry-After`` when ``refusal`` says to wait."""
    response = current_app.make_response(page)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    return response


# --- the parameters of a request ------------------------------------------------------

def item_or_404(searcher: Searcher, item_id: str) -> Item:
    """The item, or :class:`ItemNotFound` (a 404 page or JSON error saying which id)."""
    return searcher.item(item_id)


def known(args, names=RESULT_PARAMS) -> list[tuple[str, str]]:
    """The known result-page parameters of ``args`` (a MultiDict or dict), in order, non-empty."""
    getter = args.getlist if hasattr(args, "getlist") else (lambda key: [args[key]] if key in args else [])
    return [(name, value) for name in names for value in getter(name) if isinstance(value, str) and value]


def request_filters(settings: Settings) -> Filters:
    """The search filters of this request's query string (``default_min_score`` when none is given).

    Raises:
        QueryInvalid: a filter cannot be read (a 400 with the reason).
    """
    args = request.args
    min_score = args.get("min_score")
    if min_score in (None, "") and settings.default_min_score:
        min_score = settings.default_min_score
    return Filters.parse(folder=args.get("folder"), taken_from=args.get("from"),
                         taken_to=args.get("to"), min_score=min_score)


def request_page() -> int:
    """The results page this request asks for (``page``, 0 to 1000).

    Raises:
        QueryInvalid: not a whole number, or out of range.
    """
    try:
        number = int(request.args.get("page", "0") or 0)
    except ValueError:
        raise QueryInvalid("page must be a whole number") from None
    if not 0 <= number <= 1000:
        raise QueryInvalid("page must be between 0 and 1000")
    return number


def sent_photo(ctx: WebContext) -> Image:
    """The photo of the request's ``photo`` field, decoded (never stored).

    Raises:
        QueryInvalid: no photo was sent.
        ImageUnreadable: it is not a photo Glimpse can read (a 400 with the reason).
    """
    upload = request.files.get("photo")
    if upload is None:
        raise QueryInvalid("no photo: send it as the multipart form field 'photo'")
    data = upload.read()
    return ctx.decode_photo(data, upload.filename or "photo")


def content_disposition(name: str) -> str:
    """An attachment ``Content-Disposition`` for any file name (RFC 6266, RFC 8187).

    ``filename`` is a plain-ASCII fallback (control characters, quotes, backslashes,
    percent signs and non-ASCII replaced by ``_``); ``filename*`` carries the name
    itself, UTF-8 and percent-encoded, so a newline or CR in it can never end the header.
    """
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", name).strip() or "photo"
    return f'attachment; filename="{fallback}"; filename*=UTF-8\'\'{quote(name, safe="")}'


# --- where a request comes from: this device, this appliance's pages, CSRF -----------

def is_local(address: str | None) -> bool:
    """Whether a peer address is this machine: any loopback address (all of
    127.0.0.0/8, ::1, and those as IPv4-mapped IPv6), which no other host can send from."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def csrf_token() -> str:
    """This browser's CSRF token (set as a cookie with the response when new)."""
    if "csrf" not in g:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if re.fullmatch(r"[A-Za-z0-9_-]{32,64}", cookie):
            g.csrf = cookie
        else:
            g.csrf, g.new_csrf = secrets.token_urlsafe(32), True
    return g.csrf


def own_hosts(settings: Settings) -> set[str]:
    """Host names a browser may use for the appliance, besides IP addresses: names a
    DNS-rebinding page could take on are not among them."""
    name = socket.gethostname().lower()
    extra = {h.strip().lower() for h in settings.trusted_hosts.split(",") if h.strip()}
    return {"localhost", name, f"{name}.local"} | extra


def own_origin(source: str, settings: Settings) -> bool:
    """Whether ``source`` (an Origin or Referer) is a page of this appliance: the same
    scheme, host and port the request was sent to, under a name the appliance owns."""
    try:
        parts = urlsplit(source)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    if parts.scheme != request.scheme:
        return False
    default = 443 if parts.scheme == "https" else 80
    try:  # where the browser sent this request: the Host header
        target = urlsplit("//" + request.host)
        target_host, target_port = (target.hostname or "").lower(), target.port or default
    except ValueError:
        return False
    if host != target_host or (port or default) != target_port:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in own_hosts(settings) or host.endswith(".localhost")


def from_another_site(settings: Settings) -> bool:
    """Whether the browser says a page of another site sent this request
    (``Sec-Fetch-Site``, else ``Origin`` or ``Referer``); ``False`` when nothing says so."""
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return True
    source = request.headers.get("Origin") or request.headers.get("Referer")
    return source is not None and not own_origin(source, settings)


def check_forgery(settings: Settings) -> None:
    """Refuse a state-changing request a page of another site could have made.

    A browser names the page that sent a request in ``Origin`` (or at least
    ``Referer``): when present, it must be this appliance. A body a cross-site
    form or ``fetch`` can send without a CORS preflight (a form, multipart or
    text/plain) must also carry the CSRF token (the ``csrf_token`` field or an
    ``X-CSRF-Token`` header equal to the ``glimpse_csrf`` cookie), or a header only
    a non-browser client or a same-site script can send (``Authorization: Bearer``
    or ``X-Glimpse-Client``). JSON bodies need a preflight cross-site, so are safe.

    Raises:
        Forbidden: the request failed either check (a 403 saying why).
    """
    if request.method not in UNSAFE_METHODS:
        return
    if from_another_site(settings):
        source = request.headers.get("Origin") or request.headers.get("Referer") or "Sec-Fetch-Site"
        abort(403, description=f"refused: this request came from a page of another site ({source[:100]}); "
                               "use the appliance's own pages (set trusted_hosts for other names of it)")
    if request.mimetype not in SIMPLE_BODIES and not (request.content_length and not request.mimetype):
        return
    # A Bearer token is never added by a browser on its own (Basic credentials can be).
    bearer = request.headers.get("Authorization", "").partition(" ")[0].lower() == "bearer"
    if bearer or CLIENT_HEADER in request.headers:
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get("X-CSRF-Token") or request.form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        abort(403, description="refused: this form is out of date or did not come from this appliance "
                               "(no matching csrf_token); open the page again and retry. Scripts: send JSON, "
                               f"or the header {CLIENT_HEADER}")


# --- admin calls ----------------------------------------------------------------------

class Refusal(typing.NamedTuple):
    """Why a request may not make admin calls: the status, the reason, and for a
    429 the seconds to wait (``Retry-After``)."""

    status: int
    reason: str
    retry_after: int | None = None


def require_admin(ctx: WebContext) -> None:
    """Admin calls need the admin token, or come from this device.

    A token set in the configuration (``admin_token_sha256``) is needed by every
    admin call, from this device too: a process of any user on the device can
    reach loopback. The token the first start made (``DATA_DIR/admin-token.sha256``,
    :mod:`device.admin`) opens admin calls to the network; calls from this device
    (a loopback address, :func:`is_local`) are accepted without it, as before
    there was one, so ``glimpse reload`` and ``push`` on the device keep working.
    With no token at all, only this device may make admin calls.

    The token comes as ``Authorization: Bearer TOKEN`` or, from a no-JavaScript
    form, as a ``token`` field; only its sha256 is stored.

    Raises:
        Unauthorized: the token is needed and missing or wrong (401).
        Forbidden: no token exists and the request is not from this device (403).
        TooManyRequests: this address sent too many wrong tokens lately (429, ``Retry-After``).
    """
    refusal = admin_refusal(ctx)
    if refusal:
        if refusal.status == 429:
            raise TooManyRequests(description=refusal.reason, retry_after=refusal.retry_after)
        abort(refusal.status, description=refusal.reason)


def sent_token() -> str:
    """The admin token the request carries ("" for none)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""  # schemes are case-insensitive
    if not token and request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        token = request.form.get("token", "")
    return token


def token_needed(ctx: WebContext) -> bool:
    """Whether this request needs the admin token (see :func:`require_admin`)."""
    if not ctx.admin.expected():
        return False
    return ctx.admin.strict or not is_local(request.remote_addr)


def admin_refusal(ctx: WebContext) -> Refusal | None:
    """Why this request may not make admin calls; ``None`` when it may.

    A wrong or missing token, where one is needed, counts as a failure of the
    client's address; past ``admin_max_failures`` the address waits (429) before
    any further attempt, right or wrong, is looked at.
    """
    expected = ctx.admin.expected()
    token = sent_token()
    if not token_needed(ctx):
        if expected and token:
            ctx.admin.check(token)  # the right token, used from this device, ends showing it
        if expected or is_local(request.remote_addr):
            return None
        return Refusal(403, "admin calls are accepted from this device only; to allow them from the network, "
                            "make an admin token (glimpse admin-token --reset, or an admin_token_sha256 "
                            "line from glimpse admin-token in the configuration)")
    client = request.remote_addr or "unknown"
    wait = ctx.attempts.retry_after(client)
    if wait > 0:
        seconds = math.ceil(wait)
        return Refusal(429, f"too many wrong admin tokens from {client}; try again in {seconds} s", seconds)
    if not token:
        ctx.attempts.failed(client)
        return Refusal(401, "admin calls need Authorization: Bearer TOKEN (the admin token)")
    if not ctx.admin.check(token):
        ctx.attempts.failed(client)
        return Refusal(401, "wrong admin token: admin calls need Authorization: Bearer TOKEN (the admin token)")
    ctx.attempts.succeeded(client)
    return None

"""The daemon's HTTP server: waitress, with the appliance's limits and a graceful stop.

A LAN appliance must stay reachable while a client misbehaves on the same network:

* Each request is read whole (request line, header fields and body) by waitress's
  event loop before a request thread sees it, so slow clients hold a socket each,
  never one of the few request threads (a thread-per-connection server such as
  cheroot gave each trickling client a thread until all were taken).
* The request line, the header section and the body are limited as they arrive,
  answered with 414, 431 and 413 (a JSON ``{"error": ...}`` naming the setting),
  before the application or memory sees more.
* A client must send its whole request line and headers within
  ``request_header_timeout`` seconds and may stay silent at most
  ``client_timeout`` seconds; open connections are capped at ``max_connections``.
* Every request is logged in one line with a bounded, escaped prefix of its target.

:class:`HttpServer` binds at construction; :meth:`~HttpServer.serve` runs the loop
(in a thread of the daemon) until :meth:`~HttpServer.stop`, which stops accepting,
lets requests in flight finish up to a timeout, and closes the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterable

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import BadRequest, RequestEntityTooLarge, RequestHeaderFieldsTooLarge

log = logging.getLogger("glimpse.http")

#: Characters of a request target written to the log; longer ones end in "…".
LOG_TARGET_CHARS = 200
#: Bytes of a refused request's start kept to log it.
_REFUSED_PREFIX_BYTES = LOG_TARGET_CHARS


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one client may send and how long it may take (from the settings table).

    Attributes:
        max_request_line: bytes of the request line (method, target, version).
        max_request_headers: bytes of the request line and header fields together.
        max_body: bytes of a request body.
        max_connections: open client connections; more wait in the listen backlog.
        request_header_timeout: seconds from a request's first byte to the end of its headers.
        client_timeout: seconds a connection may stay silent (idle keep-alive, stalled body).
    """

    max_request_line: int = 8192
    max_request_headers: int = 32768
    max_body: int = 50 * 1024 * 1024
    max_connections: int = 100
    request_header_timeout: float = 15.0
    client_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings) -> "ServerLimits":
        """The limits of ``settings`` (a :class:`device.settings.Settings`)."""
        return cls(max_request_line=settings.max_request_line,
                   max_request_headers=settings.max_request_headers,
                   max_body=settings.max_upload_mb * 1024 * 1024,
                   max_connections=settings.max_connections,
                   request_header_timeout=settings.request_header_timeout,
                   client_timeout=settings.client_timeout)


def bounded(text: str, limit: int = LOG_TARGET_CHARS) -> str:
    """``text`` as a log line may hold it: at most ``limit`` characters, control
    characters escaped (no forged log lines), and the full length when cut."""
    shown = text[:limit]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in shown)
    return shown if len(text) <= limit else f"{shown}… ({len(text)} chars)"


class RequestLineTooLong(BadRequest):
    """The request line (mostly the URL) exceeds ``max_request_line``."""

    code = 414
    reason = "URI Too Long"


class _Parser(HTTPRequestParser):
    """waitress's request parser, also refusing an overlong request line (414).

    waitress limits the header section as a whole (431); the request line gets a
    limit of its own so that a huge URL is named for what it is.
    """

    def __init__(self, adj, limits: ServerLimits):
        super().__init__(adj)
        self.limits = limits
        self.head_start = b""  # the request's first bytes, to log a refusal

    def received(self, data: bytes) -> int:
        if self.body_rcv is None and not self.completed:
            if len(self.head_start) < _REFUSED_PREFIX_BYTES:
                self.head_start += data[:_REFUSED_PREFIX_BYTES - len(self.head_start)]
            # The line so far: the header section is bounded (431), so this copy is too.
            head = (self.header_plus + data[:self.limits.max_request_line + 2]).lstrip(b"\r\n")
            end = head.find(b"\n")
            line = len(head) if end < 0 else end
            if line > self.limits.max_request_line:
                self.parse_header(b"GET / HTTP/1.0\r\n")  # as waitress does for its own refusals
                self.error = RequestLineTooLong(
                    f"the request line is longer than {self.limits.max_request_line} bytes "
                    f"(max_request_line): shorten the URL")
                self.completed = True
                return len(data)
        return super().received(data)


class _ErrorTask(ErrorTask):
    """A refusal by the server: JSON like the application's errors, and one log line."""

    def execute(self) -> None:
        error = self.request.error
        limits: ServerLimits = self.channel.server.limits
        reason = error.body
        if isinstance(error, RequestHeaderFieldsTooLarge):
            reason = (f"the request line and headers are longer than {limits.max_request_headers} bytes "
                      f"(max_request_headers)")
        elif isinstance(error, RequestEntityTooLarge):
            reason = f"the request body is larger than {limits.max_body // (1024 * 1024)} MB (max_upload_mb)"
        body = json.dumps({"error": reason}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        head = self.request.head_start if isinstance(self.request, _Parser) else b""
        line, newline, _ = head.partition(b"\r\n")
        shown = bounded(line.decode("latin-1")) or "-"
        if not newline and len(head) >= _REFUSED_PREFIX_BYTES:
            shown += "…"  # the rest of the line was not read, or not kept
        log.warning("%s %s refused %s: %s", self.channel.addr[0], shown, error.code, reason)


class _Channel(HTTPChannel):
    """One client connection; remembers when its current request began."""

    error_task_class = _ErrorTask

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map=map)
        self.parser_class = functools.partial(_Parser, limits=server.limits)
        self.request_began = 0.0

    def received(self, data: bytes) -> bool:
        before = self.request
        result = super().received(data)
        if self.request is not None and self.request is not before:
            self.request_began = time.monotonic()
        return result


class _Server(TcpWSGIServer):
    """waitress's TCP server with the channel above and a deadline for request heads."""

    channel_class = _Channel

    def __init__(self, application, sock: socket.socket, adj: Adjustments, limits: ServerLimits):
        self.limits = limits
        super().__init__(application, map={}, _sock=sock, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # closes connections silent for client_timeout
        # A trickling client resets any inactivity timer: its request head gets a
        # deadline of its own, so it cannot keep a connection slot forever.
        cutoff = time.monotonic() - self.limits.request_header_timeout
        for channel in list(self.active_channels.values()):
            request = channel.request
            if request is not None and not request.headers_finished and channel.request_began < cutoff:
                log.warning("%s closed: no whole request head within %gs (request_header_timeout)",
                            channel.addr[0], self.limits.request_header_timeout)
                channel.will_close = True


class HttpServer:
    """The WSGI server of the daemon, bound at construction.

    Args:
        app: the WSGI application (:func:`device.web.create_app`).
        host, port: where to listen (port 0: any free port).
        threads: request threads (each runs one request at a time).
        limits: what a client may send and for how long.
        backlog: connections the kernel queues before :meth:`serve` accepts them.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, app: Callable, host: str, port: int, threads: int = 4,
                 limits: ServerLimits | None = None, backlog: int = 128):
        self.limits = limits or ServerLimits()
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        # The waitress defaults would let a body be counted past the limit (>=) and
        # wake maintenance every 30 s; the head deadline needs a finer sweep.
        adj = Adjustments(
            sockets=[sock], threads=threads, backlog=backlog, ident="glimpse",
            connection_limit=self.limits.max_connections + 2,  # waitress counts its listener and trigger
            channel_timeout=max(1, round(self.limits.client_timeout)), cleanup_interval=1,
            max_request_header_size=self.limits.max_request_headers,
            max_request_body_size=self.limits.max_body + 1,
            asyncore_use_poll=True,  # select() fails past 1024 descriptors
        )
        # waitress warns for every request that waits for a thread: under load that
        # floods the journal, and the latency histogram already shows the queue.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._server = _Server(_AccessLog(app), sock, adj, self.limits)
        self._stop = threading.Event()
        self._drain_timeout = 0.0
        self._stopped = threading.Event()

    @property
    def bind_addr(self) -> tuple:
        """The bound ``(host, port)``."""
        return self._server.socket.getsockname()[:2]

    def serve(self) -> None:
        """Accept and answer requests until :meth:`stop`; then finish requests in flight."""
        server = self._server
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=1.0, map=server._map, use_poll=True, count=1)
            self._drain()
        finally:
            self._stopped.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop accepting, let requests in flight finish for up to ``timeout`` seconds,
        close every connection; safe from any thread.

        Returns:
            Whether the server loop ended (``False`` if it did not within ``timeout`` + 5 s).
        """
        self._drain_timeout = timeout
        self._stop.set()
        self._server.pull_trigger()  # wake the loop from its poll
        return self._stopped.wait(timeout + 5)

    def _drain(self) -> None:
        server = self._server
        server.accepting = False
        server.del_channel()  # no new connections; the listening socket closes below
        server.socket.close()
        deadline = time.monotonic() + self._drain_timeout
        while time.monotonic() < deadline:
            busy = False
            for channel in list(server.active_channels.values()):
                if channel.requests or channel.total_outbufs_len:
                    busy = True  # a request runs or its answer is still being sent
                elif not channel.will_close:
                    channel.will_close = True  # idle, or a request not yet whole: closed now
            if not busy:
                break
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
        for channel in list(server.active_channels.values()):
            channel.handle_close()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        server.trigger.close()


class _AccessLog:
    """WSGI middleware: one log line per answered request, its target bounded."""

    def __init__(self, app: Callable):
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        status: list[str] = []

        def _start_response(code: str, headers: list, exc_info: Any = None):
            status[:] = [code.split(" ", 1)[0]]
            return start_response(code, headers, exc_info)

        try:
            return self.app(environ, _start_response)
        finally:
            target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
            log.info("%s %s %s %.1fms", environ.get("REQUEST_METHOD", "-"), bounded(target),
                     status[0] if status else "-", (time.perf_counter() - started) * 1000)

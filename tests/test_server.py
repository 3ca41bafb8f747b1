"""The daemon's HTTP server against hostile clients, as a real ``glimpse serve`` on loopback:
huge request lines, headers and bodies are refused before the app sees them, the log stays
bounded, and slow clients cannot take the request threads (issue 13, items 2 and 3)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.request

import pytest

from device.server import bounded
from test_daemon import Daemon

SLOW_CLIENTS = 64
#: Slow clients are then dropped by no deadline during the test: only buffering can save the threads.
LONG_HEAD_DEADLINE = ("--request-header-timeout", "300")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, bundle_dir):
    """A daemon with 4 request threads and 1 MB bodies; its log is in ``daemon.stderr``
    once :func:`log` stopped it."""
    daemon = Daemon(tmp_path_factory.mktemp("server"), "--bundle", str(bundle_dir), "--threads", "4",
                    "--max-upload-mb", "1", *LONG_HEAD_DEADLINE)
    daemon.notifications.wait_for("READY=1")
    yield daemon
    if daemon.proc.poll() is None:
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def log(daemon):
    """A function: stop the daemon and return its log (for the module's last daemon test)."""
    def _read() -> str:
        assert daemon.stop() == 0
        return daemon.stderr
    return _read


def _exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send a raw request; the response's status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(head + body)
        except OSError:
            pass  # the server answered and closed before reading it all
        response = http.client.HTTPResponse(sock)
        response.begin()
        data = response.read()
        type_ = response.getheader("Content-Type", "")
    return response.status, json.loads(data) if type_.startswith("application/json") else {"body": data}


def test_an_overlong_request_line_gets_414_naming_the_setting(daemon):
    status, body = _exchange(daemon.port, b"GET /api/search?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414
    assert "max_request_line" in body["error"]


def test_oversized_headers_get_431_naming_the_setting(daemon):
    status, body = _exchange(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    assert status == 431
    assert "max_request_headers" in body["error"]


def test_a_body_over_the_upload_limit_gets_413_before_it_is_read(daemon):
    # Content-Length alone decides: the 2 MB are never sent.
    head = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n"
    status, body = _exchange(daemon.port, head)
    assert status == 413
    assert "max_upload_mb" in body["error"]


def test_a_chunked_body_over_the_upload_limit_gets_413(daemon):
    chunk = b"a" * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20 + b"0\r\n\r\n"  # 1.25 MB in all
    head = b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, answer = _exchange(daemon.port, head, body)
    assert status == 413
    assert "max_upload_mb" in answer["error"]


def test_requests_within_the_limits_are_answered(daemon):
    query = "a cup of coffee " + "x" * 400  # long, but within max_query_chars and max_request_line
    with urllib.request.urlopen(f"{daemon.url}/api/search?k=1&q={query.replace(' ', '+')}", timeout=30) as r:
        assert r.status == 200
    status, body = _exchange(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000
                             + b"\r\nConnection: close\r\n\r\n")
    assert status == 200 and body["status"] == "ok"


def test_slow_clients_leave_health_and_search_answering(daemon):
    """64 sockets trickle header bytes and never finish their requests (a slowloris):
    the 4 request threads stay free for everyone else."""
    slow = [socket.create_connection(("127.0.0.1", daemon.port), timeout=30) for _ in range(SLOW_CLIENTS)]
    stop = threading.Event()

    def trickle() -> None:
        for _ in range(1200):  # bounded: at most 1200 rounds (60 s) of one byte per socket
            for sock in slow:
                try:
                    sock.send(b"X")
                except OSError:
                    pass  # closed by the server's deadline for request heads
            if stop.wait(0.05):
                return

    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sender = threading.Thread(target=trickle)
        sender.start()
        for path in ("/healthz", "/api/search?q=a+rocket&k=1", "/healthz", "/api/search?q=a+cat&k=1"):
            with urllib.request.urlopen(daemon.url + path, timeout=20) as response:
                assert response.status == 200
        stop.set()
        sender.join(timeout=60)
    finally:
        stop.set()
        for sock in slow:
            sock.close()


def test_a_client_that_never_finishes_its_headers_is_disconnected(tmp_path, bundle_dir):
    daemon = Daemon(tmp_path, "--bundle", str(bundle_dir), "--request-header-timeout", "1")
    try:
        daemon.notifications.wait_for("READY=1")
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(0.2)
            closed = False
            for _ in range(300):  # bounded (60 s); the deadline is 1 s
                try:
                    sock.sendall(b"X-Slow: 1\r\n")  # a trickle resets no deadline
                    closed = sock.recv(1024) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                if closed:
                    break
            assert closed, "the server kept a connection whose headers never ended"
        status, body = daemon.get("/healthz")  # and it serves on
        assert status == 200
    finally:
        assert daemon.stop() == 0
    assert "no whole request head within 1s (request_header_timeout)" in daemon.stderr


def test_the_log_holds_a_bounded_prefix_of_each_url(daemon, log):
    # Within max_request_line, but far longer than a log line should be (400: query too long).
    long_query = "b" * 6000
    try:
        urllib.request.urlopen(f"{daemon.url}/api/search?q={long_query}", timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
    _exchange(daemon.port, b"GET /api/search?q=" + b"c" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    text = log()
    lines = text.splitlines()
    answered = [line for line in lines if "/api/search?q=bbbb" in line]
    refused = [line for line in lines if "/api/search?q=cccc" in line]
    assert answered and refused, text[-2000:]
    assert "(6014 chars) 400" in answered[0]
    assert "refused 414" in refused[0]
    assert max(len(line) for line in lines) < 600, max(lines, key=len)[:300]
    assert "Traceback" not in text


def test_bounded_escapes_control_characters_and_keeps_short_text():
    assert bounded("/api/search?q=cat") == "/api/search?q=cat"
    assert bounded("/a\nINFO forged") == "/a\\nINFO forged"
    assert bounded("x" * 500, limit=10) == "xxxxxxxxxx… (500 chars)"

"""The admin token: made on the first start, stored hashed, and guarded against guessing.

* :class:`TokenStore` keeps the sha256 of the token in ``DATA_DIR/admin-token.sha256``
  (never the token itself). The daemon's first start makes one when there is none
  (:meth:`TokenStore.ensure`), prints it once to its log, and keeps the plain token
  in memory only so the display and the kiosk can show it until the first admin
  call that uses it. ``glimpse admin-token --reset`` writes a new one.
* ``admin_token_sha256`` in the configuration, when set, wins over the file: an
  operator who wrote one chose it, and it is then needed from this device too.
  The file's token opens admin calls to the network; calls from this device
  (loopback) are accepted without it, as before it existed (see
  :func:`device.web.context.require_admin`).
* :class:`AttemptLimiter` counts failed admin attempts per client address, in
  memory and bounded in size; past ``admin_max_failures`` within
  ``admin_failure_window`` seconds, that address gets 429 with ``Retry-After``
  until the oldest failure leaves the window.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("glimpse.admin")

#: The token's hash, under the data directory (a format name the backup shares).
TOKEN_FILE = "admin-token.sha256"
#: Letters a person can read off a small display and type without confusing them
#: (no 0/o, 1/l/i): 20 of them carry 97 bits.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    """A new random admin token, e.g. ``k3vq7-m2xha-9rtcp-wz4ne`` (four groups of five)."""
    letters = "".join(secrets.choice(_ALPHABET) for _ in range(20))
    return "-".join(letters[i:i + 5] for i in range(0, 20, 5))


def digest(token: str) -> str:
    """The sha256 (hex) of ``token`` as stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The admin token's hash in a data directory, and the token of this first start.

    Args:
        data_dir: the daemon's data directory.
        configured: ``admin_token_sha256`` from the settings ("" when unset); when
            set it is the token, and the file is neither read nor written.
    """

    def __init__(self, data_dir: Path, configured: str = ""):
        self.path = Path(data_dir) / TOKEN_FILE
        self.configured = configured.strip().lower()
        #: The token made by this start, until the first admin call that uses it.
        self.first_token: str | None = None
        self._cache: tuple[tuple[int, int] | None, str] = (None, "")
        self._lock = threading.Lock()
        #: Called when the first token stops being shown (used, or replaced).
        self.on_used: Callable[[], None] = lambda: None

    @property
    def strict(self) -> bool:
        """Whether the token is needed from this device too (it was set in the configuration)."""
        return bool(self.configured)

    def expected(self) -> str:
        """The sha256 an admin token must match, or "" when there is no token (loopback-only admin).

        A file holding something other than a sha256 counts as no token (logged).
        """
        if self.configured:
            return self.configured
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return ""
        key = (stat.st_mtime_ns, stat.st_size)
        if self._cache[0] != key:  # re-read after glimpse admin-token --reset, without a restart
            text = self.path.read_text(encoding="ascii", errors="replace").strip().lower()
            if not _HEX64.fullmatch(text):
                # Fail closed: no token means admin calls from this device only, not from anywhere.
                log.warning("%s does not hold a sha256, so admin calls are accepted from this device only; "
                            "make a new token with glimpse admin-token --reset", self.path)
                text = ""
            self._cache = (key, text)
            if self.first_token is not None and digest(self.first_token) != text:
                self.first_token = None  # reset meanwhile: the token on the screen is no longer valid
                self.on_used()
        return self._cache[1]

    def ensure(self) -> str | None:
        """Make a token when there is none (the first start).

        Returns:
            The new token (kept as :attr:`first_token` too), or ``None`` when one exists.

        Raises:
            OSError: the file cannot be written (the caller logs it and goes on without).
        """
        if self.configured or self.path.exists():
            return None
        token = self.write_new()
        self.first_token = token
        return token

    def write_new(self) -> str:
        """Replace the stored hash with that of a new token; returns the token (shown once)."""
        token = new_token()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(digest(token) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        return token

    def check(self, token: str) -> bool:
        """Whether ``token`` is the admin token; the first right one ends showing it on the screen."""
        expected = self.expected()
        right = bool(expected) and hmac.compare_digest(digest(token), expected)
        if right and self.first_token is not None:
            with self._lock:
                self.first_token = None
            self.on_used()
        return right


class AttemptLimiter:
    """Failed attempts per client address, with a lockout past a limit.

    Memory is bounded: at most ``max_clients`` addresses are remembered, the
    least recently failing forgotten first.

    Args:
        max_failures: failures allowed within ``window`` seconds; the next attempt waits.
        window: seconds a failure counts.
        max_clients: addresses remembered.
        clock: monotonic seconds (tests inject one).
    """

    def __init__(self, max_failures: int = 5, window: float = 60.0, max_clients: int = 1024,
                 clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._failures: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds ``client`` must wait before its next attempt (0: it may try now)."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            if not times:
                return 0.0
            while times and now - times[0] >= self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return 0.0
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[0] + self.window - now)

    def failed(self, client: str) -> None:
        """Count a failed attempt of ``client``."""
        with self._lock:
            times = self._failures.pop(client, None) or collections.deque(maxlen=self.max_failures)
            times.append(self._clock())
            self._failures[client] = times  # most recent last
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures."""
        with self._lock:
            self._failures.pop(client, None)

    def __len__(self) -> int:
        return len(self._failures)

"""The systemd notify protocol, with the standard library alone.

``Type=notify`` services tell systemd ``READY=1`` once they can serve,
``WATCHDOG=1`` periodically while healthy, ``RELOADING=1``/``STOPPING=1`` around
those phases, and a free-text ``STATUS=``. Messages are datagrams on the Unix
socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract
namespace). Without that variable every call is a no-op, so the daemon runs
the same by hand.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends notify messages to systemd (or to nobody when not under systemd).

    Args:
        env: the environment to read ``NOTIFY_SOCKET``/``WATCHDOG_USEC`` from
            (default ``os.environ``).
    """

    def __init__(self, env: dict | None = None):
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self._watchdog_usec = 0
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self._watchdog_usec = int(usec)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half systemd's timeout), or None when off."""
        return self._watchdog_usec / 2e6 if self._watchdog_usec else None

    def notify(self, **fields) -> bool:
        """Send ``KEY=value`` lines, e.g. ``notify(READY=1, STATUS="serving")``.

        Returns:
            True if a message was sent; False when not under systemd or the
            socket is gone (a notify failure must never take the daemon down).
        """
        if not self._address:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """``READY=1``: the service can answer requests now."""
        return self.notify(READY=1, STATUS=status) if status else self.notify(READY=1)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the main loop is alive and healthy."""
        return self.notify(WATCHDOG=1)

    def reloading(self) -> bool:
        """``RELOADING=1``: a bundle switch is under way."""
        return self.notify(RELOADING=1)

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify(STOPPING=1)

    def status(self, text: str) -> bool:
        """``STATUS=...``: shown by ``systemctl status``."""
        return self.notify(STATUS=text)

"""Being found by name on the LAN: ``http://glimpse.local:8080/``.

A phone or laptop finds the appliance by multicast DNS: its host name under
``.local`` and an ``_http._tcp`` service (what a browser's or Home Assistant's
service list shows). Raspberry Pi OS runs avahi-daemon, which answers for the
host name already; ``glimpse-provision push --install`` gives it a service file
(``/etc/avahi/services/glimpse.service``). Where no avahi-daemon runs, the
daemon can announce itself with python-zeroconf (setting ``advertise``), in a
background thread so start-up never waits for mDNS probing.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger("glimpse.mdns")

#: avahi-daemon's pid file (Debian's build): present, naming a live process, while it runs.
AVAHI_PID_FILE = Path("/run/avahi-daemon/pid")
SERVICE_TYPE = "_http._tcp.local."


def host_name() -> str:
    """This machine's host name, its first label only (what ``.local`` is appended to)."""
    return socket.gethostname().split(".")[0]


def listens_beyond_loopback(host: str) -> bool:
    """Whether a server listening on ``host`` can be reached from other machines."""
    if host in ("", "0.0.0.0", "::"):
        return True
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"  # a name: assume it is a LAN name of this machine


def address(host: str, port: int) -> str:
    """The URL a visitor types: ``http://NAME.local:PORT/`` for a server on the LAN,
    ``http://127.0.0.1:PORT/`` (or the address itself) for one on loopback only."""
    suffix = "" if port == 80 else f":{port}"
    if listens_beyond_loopback(host):
        return f"http://{host_name()}.local{suffix}/"
    shown = "127.0.0.1" if host in ("localhost",) else host
    return f"http://[{shown}]{suffix}/" if ":" in shown else f"http://{shown}{suffix}/"


def default_route_address() -> str:
    """This machine's IPv4 address on its default route ("" without one)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # picks a route; a datagram socket sends nothing on connect
            return sock.getsockname()[0]
    except OSError:
        return ""


def avahi_running(pid_file: Path = AVAHI_PID_FILE) -> bool:
    """Whether avahi-daemon runs here (its pid file names a live process)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def service_name(name: str | None = None) -> str:
    """The instance name shown in service lists: ``Glimpse on HOSTNAME``."""
    return f"Glimpse on {name or host_name()}"


class Advertiser:
    """Announces ``_http._tcp`` for the web UI with python-zeroconf, from a background thread.

    Args:
        host: the address the server listens on (``0.0.0.0``: every IPv4 address of this machine).
        port: its port.
        name: the host name to announce (default :func:`host_name`).
        required: the setting said ``on`` (a missing zeroconf is a warning, not a note).
    """

    def __init__(self, host: str, port: int, name: str | None = None, required: bool = False):
        self.host, self.port, self.required = host, port, required
        self.name = name or host_name()
        self._zeroconf = None
        self._info = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Set once the service is registered (or registering failed).
        self.done = threading.Event()
        self.error: str | None = None

    def start(self) -> None:
        """Register in a background thread (mDNS probing takes seconds); returns at once."""
        self._thread = threading.Thread(target=self._register, name="mdns", daemon=True)
        self._thread.start()

    def _addresses(self) -> list[str]:
        """The IPv4 addresses to announce (and to send mDNS from).

        Raises:
            OSError: this machine has no IPv4 address but loopback.
        """
        if self.host not in ("", "0.0.0.0", "::"):
            return [self.host]
        found = []
        try:
            import ifaddr

            for adapter in ifaddr.get_adapters():
                found += [ip.ip for ip in adapter.ips
                          if isinstance(ip.ip, str) and not ipaddress.IPv4Address(ip.ip).is_loopback]
        except OSError as exc:
            # Listing interfaces needs a netlink socket, which the hardened systemd unit does not
            # allow (RestrictAddressFamilies): announce the address of the default route instead.
            log.debug("cannot list the network interfaces (%s); announcing the default route's address", exc)
            found = [default_route_address()]
        if not found or not found[0]:
            raise OSError("this machine has no IPv4 address besides loopback")
        return found

    def _register(self) -> None:
        try:
            from zeroconf import IPVersion, ServiceInfo, Zeroconf
        except ImportError:
            self.error = "python-zeroconf is not installed (pip install 'glimpse[lan]')"
            # Asked for (advertise = on): a warning; on auto, a note.
            log.log(logging.WARNING if self.required else logging.INFO,
                    "not announcing the web UI by mDNS: %s", self.error)
            self.done.set()
            return
        try:
            addresses = self._addresses()
            info = ServiceInfo(SERVICE_TYPE, f"{service_name(self.name)}.{SERVICE_TYPE}", port=self.port,
                               addresses=[ipaddress.IPv4Address(a).packed for a in addresses],
                               properties={"path": "/"}, server=f"{self.name}.local.")
            # IPv4 only: the server listens on IPv4 (0.0.0.0), and so do the addresses announced. An
            # explicit list of IPv4 addresses keeps zeroconf from listing interfaces itself (netlink).
            zc = Zeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
            with self._lock:
                if self._closed:
                    zc.close()
                    return
                self._zeroconf, self._info = zc, info
            # Said before: registering returns only after the probes and announcements (seconds),
            # while browsers may list the service from the first announcement on.
            log.info("announcing %s by mDNS as %r", address(self.host, self.port), info.name)
            # allow_name_change: another "Glimpse on NAME" on the LAN gets "... (2)", not an error.
            zc.register_service(info, allow_name_change=True)
        except Exception as exc:  # noqa: BLE001 - mDNS is a convenience: the daemon serves without it
            self.error = str(exc) or type(exc).__name__
            log.warning("not announcing the web UI by mDNS: %s", self.error)
        finally:
            self.done.set()

    def stop(self) -> None:
        """Say goodbye (unregister) and close the sockets; bounded by zeroconf's own timeouts."""
        with self._lock:
            self._closed = True
            zc, info = self._zeroconf, self._info
            self._zeroconf = None
        if zc is None:
            return
        try:
            if self.done.is_set() and self.error is None:
                zc.unregister_service(info)
        finally:
            zc.close()


def start_advertising(settings) -> tuple[Advertiser | None, str]:
    """Announce the web UI as the ``advertise`` setting says.

    Returns:
        The running :class:`Advertiser` (or ``None``) and who announces it:
        ``zeroconf``, ``avahi``, or why nobody does.
    """
    mode = settings.advertise
    if mode == "off":
        return None, "off (advertise = off)"
    if not listens_beyond_loopback(settings.host):
        log.info("not announcing the web UI by mDNS: it listens on %s only (set host = 0.0.0.0)", settings.host)
        return None, f"off (listening on {settings.host} only)"
    if mode == "auto" and avahi_running():
        return None, "avahi"
    advertiser = Advertiser(settings.host, settings.port, required=mode == "on")
    advertiser.start()
    return advertiser, "zeroconf"

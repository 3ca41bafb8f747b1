"""A zeroconf browser, as a phone or Home Assistant browses: run inside the client's network namespace.

    python tests/mdns_browse.py NAME TIMEOUT [PATH]

Browses ``_http._tcp.local.`` until a service named NAME (``NAME._http._tcp.local.``)
resolves, or TIMEOUT seconds pass; prints one JSON object: the service's name,
port, server (host name), IPv4 addresses and TXT properties, and, with PATH,
the JSON the web server answers at ``http://ADDRESS:PORT/PATH``. Exits 1 when
nothing was found.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

TYPE = "_http._tcp.local."


def main(name: str, timeout: float, path: str | None) -> int:
    wanted = f"{name}.{TYPE}"
    found = threading.Event()
    seen: list[str] = []

    def on_change(zeroconf, service_type, name, state_change):
        seen.append(f"{state_change.name} {name}")
        if name == wanted and state_change is ServiceStateChange.Added:
            found.set()

    zc = Zeroconf(ip_version=IPVersion.V4Only)
    try:
        ServiceBrowser(zc, TYPE, handlers=[on_change])
        deadline = time.monotonic() + timeout
        if not found.wait(timeout):
            print(json.dumps({"error": f"{wanted} not found in {timeout}s", "seen": seen}))
            return 1
        info = zc.get_service_info(TYPE, wanted, timeout=int(max(1, deadline - time.monotonic()) * 1000))
        if info is None:
            print(json.dumps({"error": f"{wanted} did not resolve", "seen": seen}))
            return 1
        addresses = [socket.inet_ntoa(a) for a in info.addresses_by_version(IPVersion.V4Only)]
        answer = {"name": info.name, "port": info.port, "server": info.server, "addresses": addresses,
                  "properties": {k.decode(): (v or b"").decode() for k, v in info.properties.items()}}
        if path is not None:
            while True:  # the announcement may come before the web server answers
                try:
                    with urllib.request.urlopen(f"http://{addresses[0]}:{info.port}/{path}", timeout=5) as r:
                        answer["fetched"] = json.load(r)
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        answer["fetched"] = {"error": str(exc)}
                        break
                    time.sleep(0.2)
        print(json.dumps(answer))
        return 0
    finally:
        zc.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))

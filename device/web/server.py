"""``glimpse serve``: load the bundle, then serve the app with waitress.

waitress is a production WSGI server in pure Python: no compiler on the Pi, a
fixed thread pool sized for a 1-4 core board, and it sits happily behind
systemd. The model and index are loaded before the socket is opened, so the
first request never waits for them.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from device.search import Searcher
from device.web import create_app

log = logging.getLogger("glimpse")


def serve(bundle_dir: Path, host: str = "127.0.0.1", port: int = 8080, threads: int = 4) -> None:
    """Serve the web UI and API for ``bundle_dir`` until SIGINT or SIGTERM.

    Raises:
        BundleInvalid: the bundle fails verification (nothing is served).
    """
    from waitress import create_server

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    searcher = Searcher.from_bundle(bundle_dir)
    log.info("bundle %s: %d photos, model %s", searcher.bundle.id, len(searcher.bundle),
             searcher.bundle.spec.full_id)
    server = create_server(create_app(searcher), host=host, port=port, threads=threads,
                           ident="glimpse", clear_untrusted_proxy_headers=True)

    def _stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    url = f"http://{host}:{server.effective_port}/" if ":" not in host else f"http://[{host}]:{server.effective_port}/"
    print(f"Glimpse is serving {len(searcher.bundle)} photos at {url}", flush=True)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
        searcher.close()
        log.info("stopped")

"""``glimpse``: the device's command line.

    glimpse search QUERY --bundle DIR [-k 5] [--json]
    glimpse serve [--bundle DIR] [--host 127.0.0.1] [--port 8080] [any setting as --flag]
    glimpse config [--flags]         the effective settings and where each came from
    glimpse reload [--bundle-name NAME]   ask the running daemon to verify and switch bundles
    glimpse verify --bundle DIR
    glimpse health [--port 8080] [--wait SECONDS]   print the daemon's /healthz answer
    glimpse selftest [--model DIR]

Errors print ``glimpse: error: ...`` and exit 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device import settings
from device.errors import GlimpseError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glimpse", description="Offline text-to-image photo search.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = commands.add_parser("search", help="search a bundle by text and print the best photos")
    search.add_argument("query", help="what you are looking for, e.g. 'a cup of coffee'")
    search.add_argument("--bundle", required=True, type=Path, help="bundle directory")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    search.add_argument("--json", action="store_true", help="print a JSON array instead of a table")

    serve = commands.add_parser("serve", help="serve the web UI and JSON API (the daemon)")
    settings.add_arguments(serve, tuple(s.name for s in settings.SETTINGS))
    serve.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    config = commands.add_parser("config", help="print the effective settings and where each came from")
    settings.add_arguments(config, tuple(s.name for s in settings.SETTINGS))
    config.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    reload = commands.add_parser("reload", help="ask the running daemon to verify and switch to a bundle")
    reload.add_argument("--bundle-name", help="a directory under DATA_DIR/bundles to switch `current` to "
                                              "(default: re-read the configured bundle)")
    reload.add_argument("--token", help="admin token (default: $GLIMPSE_ADMIN_TOKEN)")
    settings.add_arguments(reload, ("host", "port"))
    reload.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    verify = commands.add_parser("verify", help="check every file of a bundle against its manifest")
    verify.add_argument("--bundle", required=True, type=Path, help="bundle directory")

    health = commands.add_parser("health", help="print the running daemon's /healthz answer (JSON)")
    health.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="keep asking for up to this long while no daemon answers (default 0: ask once)")
    settings.add_arguments(health, ("host", "port"))
    health.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    selftest = commands.add_parser(
        "selftest", help="run both towers on the model's reference inputs and compare with PyTorch")
    selftest.add_argument("--model", type=Path, help="model directory (default: the committed default model)")
    selftest.add_argument("--min-cosine", type=float, default=0.99, help="fail below this cosine (default 0.99)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``glimpse``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except GlimpseError as exc:
        if args.debug:
            raise
        print(f"glimpse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _search(args) -> int:
    from device.search import Searcher, check_query

    check_query(args.query)  # refuse a bad query before paying for the model load
    with Searcher.from_bundle(args.bundle) as searcher:
        results = searcher.search(args.query, k=args.k)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=1, ensure_ascii=False))
    else:
        for r in results:
            print(f"{r.rank:>3}  {r.score:6.3f}  {r.item.path}")
    return 0


def _settings(args) -> settings.Settings:
    cli = {s.name: getattr(args, s.name, None) for s in settings.SETTINGS}
    return settings.load(cli, config_file=args.config)


def _serve(args) -> int:
    from device.daemon import Daemon, configure_logging

    effective = _settings(args)
    configure_logging(effective.log_level)
    return Daemon(effective).serve()


def _config(args) -> int:
    print(settings.describe(_settings(args)))
    return 0


def _daemon_url(effective: settings.Settings, path: str) -> str:
    """The daemon's URL for ``path`` on this device (a wildcard listen address means loopback)."""
    host = "127.0.0.1" if effective.host in {"0.0.0.0", "", "::"} else effective.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{effective.port}{path}"


def _reload(args) -> int:
    import os
    import urllib.error
    import urllib.request

    effective = _settings(args)
    url = _daemon_url(effective, "/api/admin/reload")
    body = json.dumps({"bundle": args.bundle_name} if args.bundle_name else {}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    token = args.token or os.environ.get("GLIMPSE_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise GlimpseError(f"reload refused ({exc.code}): {reason}") from None
    except urllib.error.URLError as exc:
        raise GlimpseError(f"no Glimpse daemon answers at {url}: {exc.reason}") from None
    print(f"now serving bundle {answer['bundle_id']} (was {answer['previous']})")
    return 0


def _verify(args) -> int:
    from device.bundle import Bundle

    bundle = Bundle.open(args.bundle, verify="full")
    print(f"{bundle.path}: bundle {bundle.id} is intact: {len(bundle)} photos, "
          f"model {bundle.spec.full_id}, {len(bundle.manifest['files'])} files checked")
    return 0


def _health(args) -> int:
    import http.client
    import time
    import urllib.error
    import urllib.request

    url = _daemon_url(_settings(args), "/healthz")
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                answer = json.load(response)
            break
        except urllib.error.HTTPError as exc:
            # The daemon answered, but not healthy: waiting would not change that.
            raise GlimpseError(f"the daemon at {url} is unhealthy ({exc.code} {exc.reason})") from None
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() >= deadline:
                reason = getattr(exc, "reason", exc)
                raise GlimpseError(f"no Glimpse daemon answers at {url}: {reason}") from None
            time.sleep(0.2)  # polling a daemon that is (re)starting; bounded by --wait
        except (ValueError, http.client.HTTPException):
            raise GlimpseError(f"{url} did not answer like a Glimpse daemon: is another program on that port?") from None
    if not isinstance(answer, dict) or answer.get("status") != "ok" or "bundle_id" not in answer:
        raise GlimpseError(f"{url} answered {answer!r}, not a Glimpse health report")
    print(json.dumps(answer))
    return 0


def _selftest(args) -> int:
    from device.selftest import run_selftest

    figures = run_selftest(args.model)
    for name, value in figures.items():
        print(f"{name}: min cosine {value:.6f}")
    worst = min(figures.values())
    if worst < args.min_cosine:
        print(f"glimpse: error: parity {worst:.6f} is below {args.min_cosine}", file=sys.stderr)
        return 1
    return 0


_COMMANDS = {"search": _search, "serve": _serve, "config": _config, "reload": _reload,
             "verify": _verify, "health": _health, "selftest": _selftest}

"""``glimpse``: the device's command line.

    glimpse search QUERY --bundle DIR [-k 5] [--json]
    glimpse serve [--bundle DIR] [--host 127.0.0.1] [--port 8080] [any setting as --flag]
    glimpse config [--flags]         the effective settings and where each came from
    glimpse reload [--bundle-name NAME]   ask the running daemon to verify and switch bundles
    glimpse ingest PATH...           add photos to the running daemon
    glimpse status                   what the daemon serves, ingest progress
    glimpse admin-token [--reset]    make an admin token (stored hashed); --reset replaces the device's
    glimpse backup OUT.tar           added photos, their database, token hash, settings
    glimpse restore IN.tar           bring a backup back (daemon stopped); refuses a bad archive
    glimpse verify --bundle DIR
    glimpse remove-bundle [--data-dir DIR] NAME...   delete old bundles (only bundles Glimpse wrote)
    glimpse health [--port 8080] [--wait SECONDS]   print the daemon's /healthz answer
    glimpse selftest [--model DIR]

Errors print one line ``glimpse: error: ...`` and exit 2 (1 for an unexpected
error, a bug); ``--debug`` shows tracebacks and LiteRT's native log lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device import settings
from device.commandline import CommandParser, run_command
from device.errors import GlimpseError
from device.wording import plural


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="glimpse", description="Offline text-to-image photo search.")
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

    ingest = commands.add_parser("ingest", help="add photos to the running daemon (searchable within seconds)")
    ingest.add_argument("paths", nargs="+", type=Path, help="photo files or folders (walked recursively)")
    ingest.add_argument("--token", help="admin token (default: $GLIMPSE_ADMIN_TOKEN)")
    settings.add_arguments(ingest, ("host", "port"))
    ingest.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    status = commands.add_parser("status", help="what the running daemon serves, and ingest progress")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    settings.add_arguments(status, ("host", "port"))
    status.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    admin = commands.add_parser("admin-token", help="make a new admin token; prints it once and the line "
                                                    "to put in the configuration file")
    admin.add_argument("--reset", action="store_true",
                       help="replace the token in DATA_DIR/admin-token.sha256 (the one the first start made); "
                            "the running daemon uses the new one at once")
    settings.add_arguments(admin, ("data_dir",))
    admin.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    backup = commands.add_parser("backup", help="write the added photos, their database, the admin token's hash "
                                                "and the settings to a tar file (the daemon may be running)")
    backup.add_argument("out", type=Path, help="the tar file to write, e.g. glimpse-backup.tar")
    settings.add_arguments(backup, ("data_dir",))
    backup.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    restore = commands.add_parser("restore", help="bring back a backup into the data directory (stop the daemon "
                                                  "first); a truncated or altered backup changes nothing")
    restore.add_argument("archive", type=Path, help="a tar file written by glimpse backup")
    settings.add_arguments(restore, ("data_dir", "host", "port"))
    restore.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

    verify = commands.add_parser("verify", help="check every file of a bundle against its manifest")
    verify.add_argument("--bundle", required=True, type=Path, help="bundle directory")

    remove = commands.add_parser(
        "remove-bundle", help="delete bundles under DATA_DIR/bundles, each only if it is a bundle Glimpse wrote",
        description="Delete bundles under DATA_DIR/bundles. A bundle is removed only when its manifest "
                    "names every file in it, never the one `current` points at; an unfinished transfer "
                    "(.incoming/NAME) is removed whatever it holds. push uses this to keep the newest few.")
    remove.add_argument("names", nargs="+", metavar="NAME", help="NAME or .incoming/NAME under DATA_DIR/bundles")
    settings.add_arguments(remove, ("data_dir",))
    remove.add_argument("--config", type=Path, help=f"configuration file (default {settings.CONFIG_FILE})")

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
    return run_command("glimpse", _COMMANDS[args.command], args)


def _search(args) -> int:
    from device.search import Searcher, check_query

    check_query(args.query)  # refuse a bad query before paying for the model load
    with Searcher.from_bundle(args.bundle) as searcher:
        results = searcher.search(args.query, k=args.k)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=1, ensure_ascii=False))
    else:
        for r in results:
            # The strength last: a path may contain spaces, the first three columns never do.
            print(f"{r.rank:>3}  {r.score:6.3f}  {r.item.path}" + (f"  ({r.strength})" if r.strength else ""))
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


def _daemon_url(args, path: str, effective: settings.Settings | None = None) -> str:
    effective = effective or _settings(args)
    host = "127.0.0.1" if effective.host in {"0.0.0.0", "", "::"} else effective.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{effective.port}{path}"


def _call_daemon(args, path: str, body: bytes | None = None, content_type: str = "application/json",
                 method: str | None = None):
    """One request to the running daemon; its JSON answer, or a GlimpseError saying why not."""
    import os
    import urllib.error
    import urllib.request

    url = _daemon_url(args, path)
    # X-Glimpse-Client: a header no web page can send cross-site, so the daemon's CSRF
    # check knows an upload's multipart body comes from a program, not a form.
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type, "X-Glimpse-Client": "cli"})
    token = getattr(args, "token", None) or os.environ.get("GLIMPSE_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            answer = json.load(exc)
            reason = answer.get("error", exc.reason)
        except (ValueError, AttributeError):
            answer, reason = None, exc.reason
        error = GlimpseError(f"the daemon refused ({exc.code}): {reason}")
        error.answer = answer  # an upload refused as a whole still says why for each file
        raise error from None
    except urllib.error.URLError as exc:
        raise GlimpseError(f"no Glimpse daemon answers at {url}: {exc.reason}") from None


def _reload(args) -> int:
    body = json.dumps({"bundle": args.bundle_name} if args.bundle_name else {}).encode()
    answer = _call_daemon(args, "/api/admin/reload", body, method="POST")
    print(f"now serving bundle {answer['bundle_id']} (was {answer['previous']})")
    return 0


def _ingest(args) -> int:
    import uuid

    from device.images import PHOTO_SUFFIXES

    files = []
    for path in args.paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise GlimpseError(f"{path}: no such file or folder")
    if not files:
        raise GlimpseError("no photos to add")
    counts = {"queued": 0, "duplicate": 0, "in_bundle": 0, "refused": 0}
    for start in range(0, len(files), 8):  # a few per request keeps each under the upload limit
        boundary = uuid.uuid4().hex
        body = bytearray()
        for path in files[start:start + 8]:
            name = path.name.replace('"', "_")
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n").encode()
            body += path.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        try:
            results = _call_daemon(args, "/api/admin/upload", bytes(body),
                                   f"multipart/form-data; boundary={boundary}", method="POST")
        except GlimpseError as exc:
            answer = getattr(exc, "answer", None)
            if not (isinstance(answer, dict) and isinstance(answer.get("results"), list)):
                raise
            results = answer["results"]  # every file of this batch refused: each says why
        for result in results:
            counts[result["status"]] += 1
            detail = result.get("reason") or result.get("path")
            label = _INGEST_LABELS.get(result["status"], result["status"])
            print(f"{result['name']}: {label}" + (f" ({detail})" if detail else ""))
    print(f"{counts['queued']} added, {counts['duplicate']} added before, {counts['in_bundle']} already in the bundle, "
          f"{counts['refused']} refused")
    return 1 if counts["refused"] else 0


_INGEST_LABELS = {"queued": "added", "duplicate": "added before", "in_bundle": "already in the bundle",
                  "refused": "refused"}


def _status(args) -> int:
    status = _call_daemon(args, "/api/status")
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(f"bundle {status['bundle_id']}: {plural(status['items'], 'photo')}, model {status['model']}, "
          f"index {status['index'].get('kind')}")
    print(f"up {status['uptime_seconds']:.0f}s, {plural(status['queries'], 'search', 'searches')} answered")
    ingest = status.get("ingest", {})
    if ingest.get("enabled"):
        held = ingest.get("in_bundle", 0)
        print(f"added on the device: {ingest.get('searchable', ingest['ready'])} searchable, {ingest['queued']} waiting, "
              f"{ingest['failed']} unreadable" + (f", {held} already in the bundle" if held else "")
              + (f"; watching {ingest['watching']}" if ingest.get("watching") else ""))
        for quarantined in ingest.get("quarantine") or []:
            print(f"quarantined {quarantined['path']}: {quarantined['reason']}")
        if ingest.get("paused"):
            print(f"adding photos is paused: {ingest['paused']}")
    else:
        print("adding photos on the device is off")
    if status.get("address"):  # older daemons do not say
        by = status.get("advertised_by", "")
        print(f"address {status['address']}" + (f" (announced by {by})" if by in ("avahi", "zeroconf") else ""))
    bridge = status.get("home_assistant")
    if bridge:
        print(f"Home Assistant: MQTT broker {bridge['broker']}, {'connected' if bridge['connected'] else 'not connected'}")
    return 0


def _admin_token(args) -> int:
    from device.admin import TokenStore, digest, new_token

    if not args.reset:
        token = new_token()
        print(f"admin token (shown once; keep it): {token}")
        print(f"put this line in {settings.CONFIG_FILE} and restart glimpse:")
        print(f"admin_token_sha256 = {digest(token)}")
        return 0
    effective = _settings(args)
    if effective.admin_token_sha256:
        raise GlimpseError(f"admin_token_sha256 is set ({effective.sources['admin_token_sha256']}) and wins over "
                           "a reset token: remove that line, or run glimpse admin-token without --reset "
                           "and put the new line in its place")
    store = TokenStore(Path(effective.data_dir))
    if not Path(effective.data_dir).is_dir():
        raise GlimpseError(f"{effective.data_dir} is not a Glimpse data directory (no such folder); "
                           "give the right one with --data-dir")
    token = store.write_new()
    print(f"new admin token (shown once; keep it): {token}")
    print(f"its sha256 is in {store.path}; the old token no longer works")
    return 0


def _config_path(args) -> Path:
    import os

    return Path(args.config or os.environ.get(settings.ENV_PREFIX + "CONFIG") or settings.CONFIG_FILE)


def _backup(args) -> int:
    from device.backup import backup

    effective = _settings(args)
    report = backup(Path(effective.data_dir), args.out, config_file=_config_path(args))
    print(f"{report.path}: {plural(report.photos, 'added photo')}, {plural(report.files, 'file')}, "
          f"{report.bytes / 1e6:.1f} MB")
    if report.left_out:
        print(f"{plural(report.left_out, 'photo')} removed while the backup ran left out")
    return 0


def _restore(args) -> int:
    import urllib.error
    import urllib.request

    from device.backup import restore

    import os

    config = _config_path(args)
    # The configuration file may not exist yet on a new device: the backup brings it.
    effective = settings.load({s.name: getattr(args, s.name, None) for s in settings.SETTINGS},
                              env={**os.environ, settings.ENV_PREFIX + "CONFIG": str(config)})
    url = _daemon_url(args, "/healthz", effective)
    try:  # the daemon holds the database open: it must not run while it is replaced
        with urllib.request.urlopen(url, timeout=2):
            pass
    except (urllib.error.URLError, OSError):
        pass
    else:
        raise GlimpseError(f"a Glimpse daemon answers at {url}: stop it first (sudo systemctl stop glimpse), "
                           "then restore and start it again")
    report = restore(args.archive, Path(effective.data_dir), config_file=config)
    print(f"restored {plural(report.photos, 'added photo')} ({plural(report.files, 'file')}) into {report.data_dir}")
    if report.settings:
        print(f"settings: {report.settings}")
    if not (report.data_dir / "current").exists():
        print("no bundle is served yet: push one from the host (glimpse-provision push)")
    return 0


def _verify(args) -> int:
    from device.bundle import Bundle

    bundle = Bundle.open(args.bundle, verify="full")
    print(f"{bundle.path}: bundle {bundle.id} is intact: {plural(len(bundle), 'photo')}, "
          f"model {bundle.spec.full_id}, {plural(len(bundle.manifest['files']), 'file')} checked")
    return 0


def _remove_bundle(args) -> int:
    from device.ownership import remove_bundles

    data_dir = _settings(args).data_dir
    refused = []
    for name, reason in remove_bundles(data_dir, args.names):
        if reason is None:
            print(f"removed {name}")
        else:
            refused.append(reason)
    if refused:
        raise GlimpseError("; ".join(refused))
    return 0


def _health(args) -> int:
    import http.client
    import time
    import urllib.error
    import urllib.request

    url = _daemon_url(args, "/healthz")
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
    failed = [f"{name} tower min cosine {value:.6f} is below {args.min_cosine}"
              for name, value in figures.items() if value < args.min_cosine]
    # The verdict is the last line, for a person and for scripts (the exit status says the same).
    print(f"selftest: FAIL ({'; '.join(failed)})" if failed else "selftest: PASS")
    return 1 if failed else 0


_COMMANDS = {"search": _search, "serve": _serve, "config": _config, "reload": _reload, "ingest": _ingest,
             "status": _status, "admin-token": _admin_token, "backup": _backup, "restore": _restore,
             "verify": _verify, "health": _health,
             "selftest": _selftest, "remove-bundle": _remove_bundle}

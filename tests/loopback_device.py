"""A Glimpse "device" on this machine for push tests: a throwaway sshd on a free
loopback port and a data directory with a served bundle and a running daemon.

The push reaches it with the real ``ssh`` and ``rsync``; on the device side the
commands are this environment's ``glimpse``.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from device.bundle import write_manifest
from device.model import read_spec
from test_daemon import Daemon, _free_port

GLIMPSE = str(Path(sys.executable).with_name("glimpse"))  # this environment's console script
#: The throwaway host key is new each run: do not check or remember it.
SSH_CLIENT_OPTIONS = ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR")


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Until something accepts TCP connections on loopback ``port`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Sshd:
    """Debian's sshd on a free loopback port; host key, client key and config under ``root``.

    Args:
        root: a private directory.
        extra_config: more ``sshd_config`` lines (e.g. ``SetEnv`` for every session).
    """

    def __init__(self, root: Path, extra_config: tuple[str, ...] = ()):
        for tool in ("/usr/sbin/sshd", "ssh-keygen", "ssh", "rsync"):
            assert shutil.which(tool), f"{tool} is missing: `make test` installs openssh-server and rsync"
        root.mkdir(parents=True, exist_ok=True)
        self.key = root / "client_key"
        for key in (root / "host_key", self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        shutil.copyfile(root / "client_key.pub", root / "authorized_keys")
        self.port = _free_port()
        self.user = getpass.getuser()
        extra_config = tuple(extra_config)
        if os.environ.get("PYTHONPATH"):
            # The "device" runs the code under test too (a worktree on PYTHONPATH), not the
            # venv's installed copy: sshd starts sessions with a clean environment.
            line = f"PYTHONPATH={os.environ['PYTHONPATH']}"
            setenv = [i for i, c in enumerate(extra_config) if c.startswith("SetEnv ")]
            extra_config = (tuple(f"{c} {line}" if i == setenv[0] else c for i, c in enumerate(extra_config))
                            if setenv else (*extra_config, f"SetEnv {line}"))
        config = root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", "StrictModes no",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", f"PidFile {root / 'sshd.pid'}",
            *extra_config,
        ]) + "\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        with open(root / "sshd.log", "w") as log:  # -e: sshd logs to stderr
            self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                         stdout=subprocess.DEVNULL, stderr=log)
        wait_for_port(self.port)

    def args(self, port: int | None = None) -> list[str]:
        """``glimpse-provision push`` options that reach this sshd (or ``port``)."""
        args = ["--port", str(port or self.port), "--user", self.user, "--identity", str(self.key)]
        for option in SSH_CLIENT_OPTIONS:
            args += ["--ssh-option", option]
        return args

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def bundle_id(bundle: Path) -> str:
    """The id in ``bundle``'s manifest."""
    return json.loads((bundle / "manifest.json").read_text())["bundle_id"]


def make_variant(source: Path, dest: Path, created: str, extra: dict[str, bytes] | None = None) -> Path:
    """A copy of bundle ``source`` with ``extra`` files and a fresh manifest, as if
    built at ``created`` (``YYYYmmddTHHMMSSZ``): a different, valid bundle."""
    shutil.copytree(source, dest)
    for relative, data in (extra or {"extra/variant.txt": created.encode()}).items():
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        (dest / relative).write_bytes(data)
    count = len((dest / "items.jsonl").read_text().splitlines())
    manifest = write_manifest(dest, read_spec(dest / "model", verify=False), count)
    # The id and creation time are data in the manifest (which lists no hash of itself).
    manifest["bundle_id"] = created + manifest["bundle_id"][16:]
    manifest["created"] = (f"{created[:4]}-{created[4:6]}-{created[6:8]}T"
                           f"{created[9:11]}:{created[11:13]}:{created[13:15]}Z")
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return dest


class DeviceRoot:
    """A device's data directory serving ``initial`` (a copy, named by its id), and its daemon.

    Args:
        tmp_path: a private directory (the daemon's notify socket goes there).
        initial: the bundle served at first.
        data_dir: the data directory (default: under ``tmp_path``).
    """

    def __init__(self, tmp_path: Path, initial: Path, data_dir: Path | None = None):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp_path = tmp_path
        self.data_dir = data_dir or tmp_path / "device" / "var-lib-glimpse"
        self.bundles = self.data_dir / "bundles"
        self.bundles.mkdir(parents=True)
        self.initial = bundle_id(initial)
        shutil.copytree(initial, self.bundles / self.initial)
        (self.data_dir / "current").symlink_to(f"bundles/{self.initial}")
        self.daemon: Daemon | None = None
        self.start()

    def start(self) -> None:
        """Start ``glimpse serve --data-dir`` (as systemd would) and wait for READY."""
        (self.tmp_path / "notify.sock").unlink(missing_ok=True)
        self.daemon = Daemon(self.tmp_path, "--data-dir", str(self.data_dir))
        self.daemon.notifications.wait_for("READY=1")

    def serving(self) -> str:
        """The bundle id /healthz reports."""
        return self.daemon.get("/healthz")[1]["bundle_id"]

    def current(self) -> str:
        """Where the ``current`` link points."""
        return os.readlink(self.data_dir / "current")

    def incoming(self) -> list[str]:
        """Unfinished transfers (directories under ``bundles/.incoming``)."""
        incoming = self.bundles / ".incoming"
        return sorted(p.name for p in incoming.iterdir()) if incoming.exists() else []

    def stop(self) -> None:
        """Stop the daemon (SIGTERM), if it runs."""
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def push_args(self, sshd: Sshd, bundle: Path, *extra: str, port: int | None = None) -> list[str]:
        """``python -m`` arguments of a push of ``bundle`` to this device through ``sshd``."""
        return ["provisioning", "push", "127.0.0.1", "--bundle", str(bundle), *sshd.args(port),
                "--data-dir", str(self.data_dir), "--remote-glimpse", GLIMPSE,
                "--daemon-port", str(self.daemon.port), "--health-wait", "2", *extra]

"""A device reached over SSH (the remote side of a push): the one place that builds ``ssh`` and ``rsync`` command lines.

Glimpse talks to a Pi with the tools people already have and already trust: the
system ``ssh`` (their keys, agent and ``~/.ssh/config`` apply) and ``rsync``.
Every remote command runs non-interactively (``BatchMode``: a missing key is an
error, never a password prompt hanging a fleet run) with bounded timeouts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import subprocess
import tempfile
from pathlib import PurePosixPath
from typing import Iterator

from device.errors import DeviceUnreachable, ToolMissing

#: Defaults added before the user's own ``-o`` options (ssh keeps the first value
#: of an option, so theirs must come first to win; see :meth:`Remote.ssh_args`).
_SSH_DEFAULTS = ("BatchMode=yes", "ConnectTimeout=15", "ServerAliveInterval=15", "ServerAliveCountMax=4")


#: A Unix socket's path must fit in ``sun_path`` (108 bytes on Linux, with its NUL);
#: ssh's ``%C`` is 40 hex digits.
_SOCKET_PATH_MAX = 107
_CONTROL_NAME = 40


@dataclasses.dataclass(frozen=True)
class Remote:
    """How to reach one device.

    Attributes:
        host: host name or address (``user@`` is taken from :attr:`user`).
        port: SSH port.
        user: login name (default: ssh's choice: ``~/.ssh/config`` or the local user).
        identity: private key file (``ssh -i``).
        ssh_options: extra ``-o`` options, ``Name=value`` each, e.g. ``StrictHostKeyChecking=no``.
        control_dir: a private directory for an ssh master connection that
            every command shares (see :meth:`shared_connection`), or ``None``.
    """

    host: str
    port: int = 22
    user: str | None = None
    identity: str | None = None
    ssh_options: tuple[str, ...] = ()
    control_dir: str | None = None

    @contextlib.contextmanager
    def shared_connection(self) -> Iterator["Remote"]:
        """This remote with one ssh connection shared by every command (ssh's
        ``ControlMaster``): a push runs about eight commands, and a login costs
        more than most of them. The master is closed on the way out."""
        with tempfile.TemporaryDirectory(prefix="glimpse-ssh-") as tmp:
            if len(tmp) + 1 + _CONTROL_NAME > _SOCKET_PATH_MAX:
                yield self  # a long TMPDIR: no room for the socket's name; one login per command
                return
            shared = dataclasses.replace(self, control_dir=tmp)
            try:
                yield shared
            finally:
                try:
                    subprocess.run([*shared.ssh_args(), "-O", "exit", shared.login], capture_output=True,
                                   stdin=subprocess.DEVNULL, timeout=15)
                except (subprocess.TimeoutExpired, ToolMissing):
                    pass  # the master exits by itself (ControlPersist) once idle

    @property
    def login(self) -> str:
        """``user@host`` or ``host``."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_args(self) -> list[str]:
        """The ``ssh`` command line up to (not including) the destination.

        Raises:
            ToolMissing: no ``ssh`` on this host.
        """
        ssh = shutil.which("ssh")
        if ssh is None:
            raise ToolMissing("ssh is not installed on this host (Debian: apt install openssh-client)")
        args = [ssh, "-p", str(self.port)]
        if self.identity:
            args += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        for option in (*self.ssh_options, *_SSH_DEFAULTS):
            args += ["-o", option]
        if self.control_dir:
            # %C: a hash of host, port and user, short enough for a socket path.
            args += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_dir}/%C",
                     "-o", "ControlPersist=60"]
        return args

    def run(self, command: str, *, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a shell ``command`` on the device and capture its output.

        Args:
            command: one POSIX shell command line (quote arguments with :func:`shell`).
            input: text sent to the command's standard input.
            timeout: seconds before the command is abandoned.

        Returns:
            The completed process; a non-zero ``returncode`` is the caller's to judge.

        Raises:
            DeviceUnreachable: ssh could not log in (exit status 255) or timed out.
            ToolMissing: no ``ssh`` on this host.
        """
        try:
            proc = subprocess.run([*self.ssh_args(), self.login, command], input=input, capture_output=True,
                                  text=True, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceUnreachable(f"{self.login}: no answer within {timeout:.0f}s") from None
        if proc.returncode == 255:  # ssh's own failure; a remote command's status is 0-254
            raise DeviceUnreachable(f"cannot log in to {self.login} port {self.port} over ssh: "
                                    f"{last_line(proc.stderr) or 'ssh exited 255'}")
        return proc

    def rsync_args(self, rsync_path: str | None = None) -> list[str]:
        """``rsync`` and the options that make it go over this device's ssh.

        Raises:
            ToolMissing: no ``rsync`` (or ``ssh``) on this host.
        """
        rsync = shutil.which("rsync")
        if rsync is None:
            raise ToolMissing("rsync is not installed on this host (Debian: apt install rsync)")
        args = [rsync, "-e", shlex.join(self.ssh_args())]
        if rsync_path:
            args.append(f"--rsync-path={rsync_path}")
        return args

    def destination(self, path: PurePosixPath | str) -> str:
        """``user@host:path`` for rsync."""
        return f"{self.login}:{path}"


def shell(*words) -> str:
    """One shell command line from ``words``, each quoted for a POSIX shell."""
    return shlex.join(str(word) for word in words)


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (where tools put their error), or ``""``."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""

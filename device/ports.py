"""Who holds a TCP port: the process behind "address already in use".

Read from ``/proc/net/tcp{,6}`` (the listening socket's inode) and
``/proc/*/fd`` (which process has that socket open). Other users' processes
cannot be inspected without root; then the answer is ``None``, not a guess.
"""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN = "0A"  # TCP state of a listening socket in /proc/net/tcp


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """Socket inodes listening on ``port`` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def holder_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The id of a process listening on TCP ``port``, or ``None`` when unknown.

    Unknown when no listener is found or its process's descriptors are not
    readable by this user.
    """
    targets = {f"socket:[{inode}]" for inode in listening_inodes(port, proc)}
    if not targets:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:  # another user's process, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(entry / "fd" / fd) in targets:
                    return int(entry.name)
            except OSError:
                continue
    return None

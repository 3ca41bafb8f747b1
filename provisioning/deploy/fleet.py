"""``glimpse-provision fleet``: push one bundle to every device of an Ansible inventory.

Ansible (ansible-core) does the fleet part: the inventory, running several
devices at once, per-host reports and carrying on past a failing host. Each
device gets a ``glimpse-provision push`` (see :mod:`provisioning.deploy.push`), run on
this host by ``ansible/push.yml``; this module only finds and runs the playbook.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from device.errors import FleetFailed

#: The playbook, shipped with the package.
PLAYBOOK = Path(__file__).resolve().parent / "ansible" / "push.yml"


def ansible_playbook() -> str:
    """The ``ansible-playbook`` next to this Python (a venv), else on ``PATH``.

    Raises:
        FleetFailed: ansible-core is not installed.
    """
    beside = Path(sys.executable).with_name("ansible-playbook")
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        raise FleetFailed("ansible-playbook is not installed: pip install ansible-core")
    return found


def command(inventory: Path, bundle: Path, limit: str | None = None, forks: int = 5) -> list[str]:
    """The ``ansible-playbook`` command line pushing ``bundle`` to ``inventory``."""
    extra = {"bundle": str(Path(bundle).resolve()), "glimpse_provision": [sys.executable, "-m", "provisioning"]}
    args = [ansible_playbook(), "-i", str(inventory), str(PLAYBOOK), "--forks", str(forks),
            "--extra-vars", json.dumps(extra)]
    if limit:
        args += ["--limit", limit]
    return args


def run(inventory: Path, bundle: Path, limit: str | None = None, forks: int = 5) -> int:
    """Run the playbook, its output going to ours; returns 0 when every device was updated.

    Raises:
        FleetFailed: ansible-playbook is missing or reported a failed or unreachable device.
    """
    if not Path(inventory).is_file():
        raise FleetFailed(f"no inventory file {inventory}")
    env = dict(os.environ)
    # ansible-core refuses to start under a non-UTF-8 locale (the C locale of cron, CI...).
    env.setdefault("LC_ALL", "C.UTF-8")
    status = subprocess.run(command(inventory, bundle, limit, forks), env=env).returncode
    if status != 0:
        raise FleetFailed(f"ansible-playbook exited {status}: not every device was updated "
                          f"(the PLAY RECAP above names them; a failed push leaves a device on the bundle it had)")
    return 0

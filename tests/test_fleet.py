"""``glimpse-provision fleet``: the Ansible playbook over two "devices" on loopback.

Two inventory hosts: ``kitchen``, a device root behind the test sshd with a
running daemon, and ``hall``, a device that is switched off (its ssh port has
nothing listening). The push to kitchen must go through while hall fails, and
the run must report each host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from loopback_device import GLIMPSE, SSH_CLIENT_OPTIONS, DeviceRoot, Sshd, bundle_id, make_variant
from test_daemon import _free_port


@pytest.fixture
def sshd(tmp_path):
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()


def test_playbook_updates_the_good_device_and_reports_the_failed_one(tmp_path, sshd, bundle_dir):
    kitchen = DeviceRoot(tmp_path / "kitchen", bundle_dir)
    new = make_variant(bundle_dir, tmp_path / "new-bundle", "20990101T000000Z")
    common = {"ansible_user": sshd.user, "ansible_ssh_private_key_file": str(sshd.key),
              "glimpse_remote_glimpse": GLIMPSE, "glimpse_ssh_options": list(SSH_CLIENT_OPTIONS),
              "glimpse_push_options": ["--health-wait", "2"]}
    inventory = tmp_path / "inventory.yml"  # JSON is YAML
    inventory.write_text(json.dumps({"glimpse": {"hosts": {
        "kitchen": {"ansible_host": "127.0.0.1", "ansible_port": sshd.port,
                    "glimpse_data_dir": str(kitchen.data_dir), "glimpse_daemon_port": kitchen.daemon.port},
        "hall": {"ansible_host": "127.0.0.1", "ansible_port": _free_port(),
                 "glimpse_data_dir": str(tmp_path / "hall")},
    }, "vars": common}}))
    env = dict(os.environ, ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_RETRY_FILES_ENABLED="0")
    try:
        proc = subprocess.run([sys.executable, "-m", "provisioning", "fleet", "--inventory", str(inventory),
                               "--bundle", str(new)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert kitchen.serving() == bundle_id(new)
    finally:
        kitchen.stop()
    out = proc.stdout
    assert proc.returncode == 2, out + proc.stderr
    assert proc.stderr.startswith("glimpse-provision: error: ansible-playbook exited 2: not every device")
    assert re.search(r"^kitchen\s+: ok=\d+\s+changed=1\s+unreachable=0\s+failed=0", out, re.M), out
    assert re.search(r"^hall\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=1", out, re.M), out
    # Each device's push log is in the report.
    assert f"serves {bundle_id(new)} (was {kitchen.initial})" in out
    assert re.search(r"fatal: \[hall\]: FAILED! => .*glimpse-provision: error: cannot log in to", out), out

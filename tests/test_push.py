"""``glimpse-provision push`` against a real sshd on loopback and a real daemon.

The "device" is this machine: a throwaway ``sshd`` (Debian's openssh-server) on a
free loopback port with keys made in tmp_path, a data directory in tmp_path with
a served bundle, and ``glimpse serve`` in a subprocess. The push runs the real
``ssh`` and ``rsync``, and on the device side this environment's ``glimpse``.
Every failure case ends with the old bundle still serving.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from loopback_device import GLIMPSE, SSH_CLIENT_OPTIONS, DeviceRoot, Sshd, bundle_id, make_variant
from provisioning.deploy.push import PushLog, PushOptions
from provisioning.deploy.push import push as push_bundle
from provisioning.deploy.remote import Remote
from test_daemon import _free_port

@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def device(tmp_path, bundle_dir):
    root = DeviceRoot(tmp_path, bundle_dir)
    yield root
    root.stop()


@pytest.fixture
def new_bundle(bundle_dir, tmp_path) -> Path:
    """A bundle built after the one the device serves."""
    return make_variant(bundle_dir, tmp_path / "new-bundle", "20990101T000000Z")


def push(device: DeviceRoot, sshd: Sshd, bundle: Path, *extra: str, check=True, port=None):
    return run_cli(*device.push_args(sshd, bundle, *extra, port=port), check=check, timeout=120)


def assert_old_bundle_serving(device: DeviceRoot) -> None:
    assert device.serving() == device.initial
    assert device.current() == f"bundles/{device.initial}"


def assert_failed_cleanly(proc, step: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("glimpse-provision: error: push of "), proc.stderr
    assert f"failed at {step}:" in proc.stderr and "Traceback" not in proc.stderr


def test_push_switches_the_daemon_and_keeps_the_newest_bundles(device, sshd, bundle_dir, new_bundle, tmp_path):
    # Other bundles on the device: with --keep 2 only the new one and the one it
    # replaces stay, even where another is newer than the latter.
    for created in ("20200101T000000Z", "20210101T000000Z", "20980101T000000Z"):
        old = make_variant(bundle_dir, tmp_path / created, created)
        shutil.copytree(old, device.bundles / bundle_id(old))
    hand_named = device.bundles / "my-test-bundle"
    shutil.copytree(bundle_dir, hand_named)

    proc = push(device, sshd, new_bundle, "--keep", "2")

    new = bundle_id(new_bundle)
    assert device.serving() == new and device.current() == f"bundles/{new}"
    steps = [line.split()[0] for line in proc.stdout.splitlines()[1:-1]]
    assert steps == ["check", "probe", "transfer", "verify", "move", "switch", "health", "prune"]
    assert f"/healthz reports {new}, 8 photos" in proc.stdout
    assert sorted(p.name for p in device.bundles.iterdir()) == sorted([".incoming", new, device.initial,
                                                                       "my-test-bundle"])
    assert "left alone (not named by bundle id): my-test-bundle" in proc.stdout
    assert device.incoming() == []
    # Unchanged files were not sent again: the model is the served bundle's, hard-linked.
    model = "model/text_int8.tflite"
    assert (device.bundles / new / model).stat().st_ino == (device.bundles / device.initial / model).stat().st_ino

    again = push(device, sshd, new_bundle)
    assert "already serving, nothing to send" in again.stdout


def test_prune_removes_only_what_proves_to_be_a_bundle(device, sshd, bundle_dir, new_bundle, tmp_path):
    # Named like an old bundle, but the user's own folder: the device's glimpse
    # (remove-bundle) proves each directory is a bundle before deleting it.
    users = device.bundles / "20000101T000000Z-00000000"
    (users / "2024").mkdir(parents=True)
    (users / "2024" / "photo.jpg").write_bytes(b"mine")
    old = make_variant(bundle_dir, tmp_path / "old", "20010101T000000Z")
    shutil.copytree(old, device.bundles / bundle_id(old))

    proc = push(device, sshd, new_bundle, "--keep", "2")

    assert device.serving() == bundle_id(new_bundle)
    assert (users / "2024" / "photo.jpg").read_bytes() == b"mine"
    assert not (device.bundles / bundle_id(old)).exists()
    prune = next(line for line in proc.stdout.splitlines() if line.startswith("prune"))
    assert f"removed {bundle_id(old)}" in prune and "holds 1 entry (2024), not a bundle Glimpse wrote" in prune
    assert "the push itself succeeded" in prune


def test_copy_corrupted_on_the_device_is_refused_and_the_old_bundle_keeps_serving(device, sshd, new_bundle, tmp_path):
    # rsync checks what crosses the wire, so the corruption a push must catch happens
    # after: a bad SD card or a faulty receiver. This device-side rsync wrapper flips a
    # byte in the received items.jsonl (a file the new bundle does not share with the old).
    wrapper = tmp_path / "rsync-that-corrupts"
    wrapper.write_text("#!/bin/sh\nrsync \"$@\"; status=$?\nfor last; do :; done\n"
                       "printf X | dd of=\"$last/items.jsonl\" bs=1 seek=20 conv=notrunc 2>/dev/null\n"
                       "exit $status\n")
    wrapper.chmod(0o755)

    proc = push(device, sshd, new_bundle, "--rsync-path", str(wrapper), check=False)

    assert_failed_cleanly(proc, "verify")
    assert "items.jsonl was altered" in proc.stderr
    assert_old_bundle_serving(device)
    assert device.incoming() == [] and bundle_id(new_bundle) not in os.listdir(device.bundles)
    assert "not resumable" in proc.stdout
    # With an honest receiver the same push then goes through.
    push(device, sshd, new_bundle)
    assert device.serving() == bundle_id(new_bundle)


def _glimpse_wrapper(tmp_path: Path, name: str, body: str) -> Path:
    """A device-side ``glimpse`` that runs the real one, with ``body`` (sh) to inject a fault."""
    wrapper = tmp_path / name
    wrapper.write_text(f"#!/bin/sh\n{body}\n")
    wrapper.chmod(0o755)
    return wrapper


def _unhealthy_when_serving(tmp_path: Path, bad_id: str) -> Path:
    """A device-side glimpse whose health check fails while the daemon serves ``bad_id``."""
    return _glimpse_wrapper(tmp_path, "glimpse-unhealthy", f"""
if [ "$1" = health ]; then
    out=$({GLIMPSE} "$@") || exit $?
    case "$out" in *{bad_id}*) echo "glimpse: error: the daemon is unhealthy (500 INTERNAL SERVER ERROR)" >&2; exit 2;; esac
    echo "$out"; exit 0
fi
exec {GLIMPSE} "$@"
""")


def test_failing_health_check_switches_the_daemon_back(device, sshd, new_bundle, tmp_path):
    # The daemon switches, then its health check fails for the new bundle (as if its
    # pages broke): injected by a device-side glimpse wrapper, the daemon is real.
    new = bundle_id(new_bundle)
    wrapper = _unhealthy_when_serving(tmp_path, new)
    proc = push(device, sshd, new_bundle, "--remote-glimpse", str(wrapper), check=False)

    assert_failed_cleanly(proc, "health")
    assert f"now serving bundle {new} (was {device.initial})" in proc.stdout
    assert f"switched back: now serving bundle {device.initial} (was {new})" in proc.stdout
    assert f"{device.initial} is serving again" in proc.stderr
    assert_old_bundle_serving(device)
    # The new bundle waits in .incoming (verified: a re-run sends nothing).
    assert device.incoming() == [new] and new not in os.listdir(device.bundles)


def test_rollback_restores_a_current_link_that_points_outside_bundles(device, sshd, new_bundle, tmp_path):
    # A device set up by hand: `current` is an absolute link to a bundle elsewhere.
    device.stop()
    elsewhere = tmp_path / "hand-installed" / "photos-bundle"
    elsewhere.parent.mkdir()
    shutil.move(device.bundles / device.initial, elsewhere)
    (device.data_dir / "current").unlink()
    (device.data_dir / "current").symlink_to(elsewhere)
    device.start()
    new = bundle_id(new_bundle)
    wrapper = _unhealthy_when_serving(tmp_path, new)
    proc = push(device, sshd, new_bundle, "--remote-glimpse", str(wrapper), check=False)

    assert_failed_cleanly(proc, "health")
    assert f"current -> {elsewhere} again" in proc.stdout
    assert f"now serving bundle {device.initial} (was {new})" in proc.stdout
    assert device.current() == str(elsewhere) and device.serving() == device.initial


def test_daemon_killed_after_the_switch_leaves_the_old_bundle_to_start(device, sshd, new_bundle, tmp_path):
    # The daemon dies right after switching (as under the OOM killer on a Pi Zero):
    # nobody answers the health check or the switch back, so the push points
    # `current` back itself, and the restarted daemon serves the old bundle.
    wrapper = _glimpse_wrapper(tmp_path, "glimpse-then-die", f"""
{GLIMPSE} "$@"; status=$?
if [ "$1" = reload ] && [ $status = 0 ]; then kill -9 {device.daemon.proc.pid}; fi
exit $status
""")
    proc = push(device, sshd, new_bundle, "--remote-glimpse", str(wrapper), check=False)

    assert_failed_cleanly(proc, "health")
    assert "no Glimpse daemon answers" in proc.stdout
    assert f"current -> bundles/{device.initial} again" in proc.stdout
    assert device.current() == f"bundles/{device.initial}"
    device.daemon.close()
    device.start()  # what systemd's Restart=on-failure does
    assert_old_bundle_serving(device)


def test_no_daemon_running_changes_nothing_and_a_rerun_sends_nothing(device, sshd, new_bundle):
    daemon_args = device.push_args(sshd, new_bundle)  # the port it had
    device.daemon.stop()
    device.daemon = None
    proc = run_cli(*daemon_args, check=False, timeout=120)

    assert_failed_cleanly(proc, "switch")
    assert "no Glimpse daemon answers" in proc.stderr
    assert f"current still points at bundles/{device.initial}, as before the push" in proc.stderr
    assert device.current() == f"bundles/{device.initial}"
    assert device.incoming() == [bundle_id(new_bundle)]

    device.start()
    proc = push(device, sshd, new_bundle)
    assert f"picking up the earlier transfer of {bundle_id(new_bundle)}" in proc.stdout
    assert re.search(r"transfer .* 0 files written", proc.stdout), proc.stdout
    assert device.serving() == bundle_id(new_bundle)


def _sent_bytes(log: str) -> float:
    number, unit = re.search(r"^transfer .*?sent ([\d.]+) (MB|kB)", log, re.M).groups()
    return float(number) * (1e6 if unit == "MB" else 1e3)


def test_killed_transfer_leaves_the_old_bundle_serving_and_a_rerun_resumes(device, sshd, bundle_dir, tmp_path):
    padding = 16_000_000
    big = make_variant(bundle_dir, tmp_path / "big-bundle", "20990101T000000Z",
                       {"extra/padding.bin": os.urandom(padding)})
    incoming = device.bundles / ".incoming" / bundle_id(big)
    args = device.push_args(sshd, big, "--rsync-option=--bwlimit=2000")  # 2 MB/s: about 8 s
    # Its own session, so the kill takes the push and its rsync and ssh children, as a
    # lost laptop or a pulled cable would. Its own TMPDIR (short: ssh's control socket
    # lives there), because a killed push cannot remove its temporary directory.
    tmpdir = Path(tempfile.mkdtemp(prefix="gp-"))
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, start_new_session=True,
                            env=dict(os.environ, TMPDIR=str(tmpdir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        received = 0
        while received < 3_000_000 and time.monotonic() < deadline and proc.poll() is None:
            received = sum(p.stat().st_size for p in incoming.rglob("*padding.bin*") if p.is_file()) \
                if incoming.exists() else 0
            time.sleep(0.05)
        assert received >= 3_000_000, f"the transfer never got going: {proc.poll()} {received}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        shutil.rmtree(tmpdir, ignore_errors=True)  # the ssh master's socket goes with it
    # The device-side rsync notices the dropped connection and keeps what it received.
    partial = incoming / "extra" / ".rsync-partial" / "padding.bin"
    deadline = time.monotonic() + 30
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists() and partial.stat().st_size > 0
    assert_old_bundle_serving(device)

    rerun = push(device, sshd, big)

    assert f"picking up the earlier transfer of {bundle_id(big)}" in rerun.stdout
    assert _sent_bytes(rerun.stdout) < padding - 2_000_000, rerun.stdout  # the received part was not sent again
    assert device.serving() == bundle_id(big) and device.incoming() == []


@pytest.fixture
def small_disk(tmp_path, bundle_dir):
    """A device whose data directory is a tmpfs with room for one bundle and 6 MB more."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    size = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file()) + 6_000_000
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"cannot mount a tmpfs (the test runs as root, as `make test` in CI): {proc.stderr}"
    root = None
    try:
        root = DeviceRoot(tmp_path, bundle_dir, data_dir=mount / "glimpse")
        yield root
    finally:
        if root is not None:
            root.stop()
        subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_leaves_the_old_bundle_serving_and_frees_the_space(small_disk, sshd, bundle_dir, tmp_path):
    device = small_disk
    big = make_variant(bundle_dir, tmp_path / "big-bundle", "20990101T000000Z",
                       {"extra/padding.bin": os.urandom(12_000_000)})
    free_before = shutil.disk_usage(device.data_dir).free

    proc = push(device, sshd, big, check=False)

    assert_failed_cleanly(proc, "transfer")
    assert "the device's disk is full" in proc.stderr and "No space left on device" in proc.stderr
    assert_old_bundle_serving(device)
    assert device.incoming() == []  # not resumable until there is room: removed
    assert shutil.disk_usage(device.data_dir).free >= free_before - 100_000


def test_bundle_altered_on_the_host_is_not_sent(device, sshd, new_bundle):
    items = new_bundle / "items.jsonl"
    items.write_bytes(items.read_bytes().replace(b"cat.png", b"dog.png"))
    proc = push(device, sshd, new_bundle, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("glimpse-provision: error:")
    assert "items.jsonl was altered" in proc.stderr
    assert os.listdir(device.bundles) == [device.initial]  # the device was not even probed
    assert_old_bundle_serving(device)


def test_bundle_id_that_would_leave_the_bundles_directory_is_refused(device, sshd, new_bundle):
    manifest = json.loads((new_bundle / "manifest.json").read_text())
    manifest["bundle_id"] = "../../escaped"
    (new_bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = push(device, sshd, new_bundle, check=False)
    assert proc.returncode == 2 and "bundle id '../../escaped' cannot be a directory name" in proc.stderr
    assert os.listdir(device.bundles) == [device.initial]  # the device was not even probed
    assert not (device.data_dir.parent / "escaped").exists()


def test_unreachable_device_is_a_clear_error(device, sshd, new_bundle):
    proc = push(device, sshd, new_bundle, port=_free_port(), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("glimpse-provision: error: cannot log in to ")
    assert_old_bundle_serving(device)


def test_stopped_push_rolls_back_and_keeps_the_transfer_to_resume(device, sshd, bundle_dir, tmp_path):
    big = make_variant(bundle_dir, tmp_path / "big-bundle", "20990101T000000Z",
                       {"extra/padding.bin": os.urandom(16_000_000)})
    incoming = device.bundles / ".incoming" / bundle_id(big)
    proc = subprocess.Popen([sys.executable, "-m", *device.push_args(sshd, big, "--rsync-option=--bwlimit=2000")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not incoming.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert incoming.exists(), "the transfer never started"
        proc.send_signal(signal.SIGTERM)  # `kill`, a cancelled CI job: the push cleans up as for Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and err.strip().endswith("glimpse-provision: interrupted")
    assert re.search(r"^transfer .*FAILED: interrupted", out, re.M), out
    assert "push failed at transfer" in out and "Traceback" not in err
    assert_old_bundle_serving(device)
    assert device.incoming() == [bundle_id(big)]  # kept: the next push resumes it


def test_first_push_to_an_empty_device_points_current_and_says_to_start_the_daemon(device, sshd, new_bundle):
    device.stop()
    empty = device.tmp_path / "empty-data-dir"
    empty.mkdir()
    proc = run_cli("provisioning", "push", "127.0.0.1", "--bundle", str(new_bundle), *sshd.args(),
                   "--data-dir", str(empty), "--remote-glimpse", GLIMPSE, "--daemon-port", str(_free_port()),
                   "--health-wait", "0", check=False, timeout=120)
    assert_failed_cleanly(proc, "switch")
    assert "start the service" in proc.stderr
    assert "no bundle served before this push; current is left pointing at" in proc.stderr
    assert os.readlink(empty / "current") == f"bundles/{bundle_id(new_bundle)}"
    # Started now (as `systemctl start glimpse` would), the daemon serves it.
    device.data_dir = empty
    device.start()
    assert device.serving() == bundle_id(new_bundle)


def test_first_push_with_a_start_command_starts_the_daemon(tmp_path, sshd, new_bundle):
    # What push --install does after setting a device up: with no bundle served yet,
    # point `current` at the new one and start the service; here the start command
    # launches `glimpse serve` in the background instead of `systemctl restart glimpse`.
    data_dir = tmp_path / "fresh-device"
    data_dir.mkdir()
    port, pid_file = _free_port(), tmp_path / "daemon.pid"
    start = (f"GLIMPSE_CONFIG=/nonexistent nohup {GLIMPSE} serve --data-dir {data_dir} --port {port} "
             f">{tmp_path / 'daemon.log'} 2>&1 & echo $! > {pid_file}")
    lines: list[str] = []
    options = PushOptions(
        remote=Remote("127.0.0.1", port=sshd.port, user=sshd.user, identity=str(sshd.key),
                      ssh_options=SSH_CLIENT_OPTIONS),
        bundle=new_bundle, data_dir=str(data_dir), remote_glimpse=GLIMPSE, daemon_port=port,
        health_wait=120, start_command=start)
    try:
        result = push_bundle(options, PushLog(lines.append))
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert result.bundle_id == bundle_id(new_bundle) and result.previous is None
    assert any(line.startswith("switch") and "started the daemon" in line for line in lines), lines
    assert any(line.startswith("health") and f"/healthz reports {bundle_id(new_bundle)}" in line for line in lines)


def test_push_works_when_tmpdir_is_too_long_for_an_ssh_control_socket(device, sshd, bundle_dir, tmp_path):
    long_tmp = tmp_path / ("t" * 60)
    long_tmp.mkdir()
    # The bundle it already serves: the probe and the health check still go over ssh.
    proc = subprocess.run([sys.executable, "-m", *device.push_args(sshd, bundle_dir)], cwd=REPO,
                          env=dict(os.environ, TMPDIR=str(long_tmp)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already serving, nothing to send" in proc.stdout

"""Found by name: ``push --install``'s hostname and avahi service file, and the daemon's own
mDNS announcement, each browsed for real.

The LAN is two network namespaces the test creates (``ip netns``) joined by a
veth pair, nothing else: the "device" side runs Debian's avahi-daemon (with its
own configuration, /run and services directory, in a private mount namespace)
or ``glimpse serve --advertise on`` (with its own host name, in a private UTS
namespace); the "phone" side browses with python-zeroconf (tests/mdns_browse.py).
Both namespaces are deleted afterwards. Needs root (as ``make test`` in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, free_port
from device import mdns
from provisioning.deploy.install import InstallFailed, InstallOptions, avahi_service, check_hostname, install_script

pytest.importorskip("zeroconf", reason="pip install 'glimpse[lan]'")

DEVICE_IP, PHONE_IP = "10.213.7.1", "10.213.7.2"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def lan():
    """Two network namespaces, ``device`` and ``phone``, joined by a veth pair (10.213.7.0/24)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the found-by-name tests create network namespaces: run as root with iproute2 "
                    "(`make test` in CI)")
    names = {"device": f"glimpse-{os.getpid()}-dev", "phone": f"glimpse-{os.getpid()}-phone"}
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", names["device"], "link", "add", "gl0", "type", "veth", "peer", "name", "gl0", "netns",
            names["phone"])
        for role, address in (("device", DEVICE_IP), ("phone", PHONE_IP)):
            ns = names[role]
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "gl0")
            _ip("-n", ns, "link", "set", "gl0", "up", "multicast", "on")
            # mDNS goes to 224.0.0.251 on this link (the namespaces have no default route).
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "gl0")
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _browse(lan, name: str, timeout: float = 60, path: str | None = None) -> dict:
    """Browse from the phone's namespace for ``name`` (tests/mdns_browse.py)."""
    command = ["ip", "netns", "exec", lan["phone"], sys.executable, str(REPO / "tests" / "mdns_browse.py"),
               name, str(timeout)] + ([path] if path else [])
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 60, cwd=REPO)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _finish(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.communicate()[1] or ""


def _install_steps(root: Path, steps: str, **options) -> subprocess.CompletedProcess:
    script = install_script(InstallOptions(wheelhouse="/var/tmp/glimpse-install/wheelhouse", **options))
    env = dict(os.environ, DESTDIR=str(root), GLIMPSE_INSTALL_STEPS=steps)
    return subprocess.run(["sh", "-s"], input=script, env=env, capture_output=True, text=True, timeout=60)


def test_install_sets_the_hostname_and_its_hosts_line(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_text("raspberrypi\n")
    (tmp_path / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")

    proc = _install_steps(tmp_path, "hostname", hostname="Glimpse", daemon_port=8080)

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "etc" / "hostname").read_text() == "glimpse\n"
    assert (tmp_path / "etc" / "hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tglimpse\n"
    assert "install: hostname: raspberrypi -> glimpse (http://glimpse.local:8080/)" in proc.stdout
    # Without --hostname the name stays.
    kept = _install_steps(tmp_path, "hostname", daemon_port=8080)
    assert "install: hostname: kept (glimpse)" in kept.stdout
    assert (tmp_path / "etc" / "hostname").read_text() == "glimpse\n"


@pytest.mark.parametrize("name", ["glimpse.local", "-glimpse", "my glimpse", "a" * 64, "", "glimpse_1"])
def test_a_name_that_cannot_be_a_hostname_is_refused(name):
    with pytest.raises(InstallFailed, match="is not a host name"):
        check_hostname(name)
    if name:
        with pytest.raises(InstallFailed):
            install_script(InstallOptions(wheelhouse="/w", hostname=name))


def test_avahi_daemon_announces_the_installed_service_file(tmp_path, lan):
    avahi = shutil.which("avahi-daemon") or "/usr/sbin/avahi-daemon"
    if not os.path.exists(avahi):
        pytest.fail("avahi-daemon is missing: `make system-deps` installs Debian's avahi-daemon")
    port = 8123
    proc = _install_steps(tmp_path, "avahi", daemon_port=port)
    assert proc.returncode == 0, proc.stderr
    services = tmp_path / "etc" / "avahi" / "services"
    assert (services / "glimpse.service").read_text() == avahi_service(port)
    conf = tmp_path / "avahi-daemon.conf"
    conf.write_text("[server]\nhost-name=glimpse-test\ndomain-name=local\nuse-ipv4=yes\nuse-ipv6=no\n"
                    "allow-interfaces=gl0\nenable-dbus=no\n[publish]\npublish-hinfo=no\n"
                    "publish-workstation=no\n")
    # A private mount namespace: avahi's compiled-in /run/avahi-daemon and /etc/avahi/services
    # become this test's own (a tmpfs, and the directory the install step wrote).
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", lan["device"], "unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs glimpse-test-run /run && mount --bind "$1" /etc/avahi/services && '
         'exec "$2" -f "$3" --no-drop-root --no-chroot --no-rlimits --debug', "sh", str(services), avahi, str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        found = _browse(lan, "Glimpse on glimpse-test")
    finally:
        log = _finish(daemon)
    assert found.get("port") == port, (found, log)
    assert found["server"] == "glimpse-test.local." and found["addresses"] == [DEVICE_IP]
    assert found["properties"] == {"path": "/"}
    assert 'Service "Glimpse on glimpse-test" (/etc/avahi/services/glimpse.service) successfully established' in log
    assert "Failed to load" not in log


def test_the_daemon_announces_itself_with_zeroconf(tmp_path, lan, bundle_dir):
    port = free_port()
    env = dict(os.environ, GLIMPSE_CONFIG=str(tmp_path / "none.conf"), PYTHONPATH=str(REPO))
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", lan["device"], "unshare", "--uts", "sh", "-c",
         'hostname glimpse-test && exec "$@"', "sh", sys.executable, "-m", "device", "serve",
         "--bundle", str(bundle_dir), "--host", "0.0.0.0", "--port", str(port), "--advertise", "on"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        found = _browse(lan, "Glimpse on glimpse-test", timeout=120, path="api/status")
    finally:
        log = _finish(daemon)
    assert found.get("port") == port, (found, log)
    assert found["server"] == "glimpse-test.local." and found["addresses"] == [DEVICE_IP]
    assert found["properties"] == {"path": "/"}
    # The web UI found that way names itself by that name.
    status = found["fetched"]
    assert status["address"] == f"http://glimpse-test.local:{port}/", status
    assert status["advertised_by"] == "zeroconf" and status["items"] == 8
    assert "announcing http://glimpse-test.local" in log


def test_avahi_running_is_read_from_its_pid_file(tmp_path):
    pid_file = tmp_path / "pid"
    assert not mdns.avahi_running(pid_file)
    pid_file.write_text(f"{os.getpid()}\n")
    assert mdns.avahi_running(pid_file)
    sleeper = subprocess.Popen(["sleep", "0"])
    sleeper.wait()
    pid_file.write_text(f"{sleeper.pid}\n")  # a process that has exited
    assert not mdns.avahi_running(pid_file)


def test_the_address_people_type():
    name = mdns.host_name()
    assert mdns.address("0.0.0.0", 8080) == f"http://{name}.local:8080/"
    assert mdns.address("::", 80) == f"http://{name}.local/"
    assert mdns.address("127.0.0.1", 8080) == "http://127.0.0.1:8080/"
    assert mdns.address("::1", 8080) == "http://[::1]:8080/"


def test_auto_does_not_announce_a_server_on_loopback_only():
    from device import settings

    advertiser, by = mdns.start_advertising(settings.load({"host": "127.0.0.1"}, env={}))
    assert advertiser is None and by == "off (listening on 127.0.0.1 only)"
    advertiser, by = mdns.start_advertising(settings.load({"host": "0.0.0.0", "advertise": "off"}, env={}))
    assert advertiser is None and by == "off (advertise = off)"


def test_the_kiosk_and_the_about_section_show_the_address(bundle_dir):
    import re

    from device import settings
    from device.daemon import Daemon
    from device.web import create_app

    daemon = Daemon(settings.load({"bundle": str(bundle_dir), "host": "0.0.0.0", "port": 8080}, env={}))
    daemon.load()
    try:
        client = create_app(daemon).test_client()
        expected = f"http://{mdns.host_name()}.local:8080/"
        kiosk = client.get("/kiosk").get_data(as_text=True)
        assert re.search(rf'<p id="address" class="address">{re.escape(expected)}</p>', kiosk)
        assert client.get("/api/kiosk").get_json()["address"] == expected
        about = client.get("/help").get_data(as_text=True)
        assert f'<code id="address">{expected}</code>' in about
        assert client.get("/api/status").get_json()["address"] == expected
    finally:
        daemon.searcher.close()


def test_without_netlink_the_default_routes_address_is_announced(monkeypatch):
    # Under the hardened unit (RestrictAddressFamilies without AF_NETLINK) listing interfaces fails;
    # that failure is simulated here (it needs systemd's seccomp filter), the route lookup is real.
    import errno

    import ifaddr

    def no_netlink():
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(ifaddr, "get_adapters", no_netlink)
    advertiser = mdns.Advertiser("0.0.0.0", 8080)
    expected = mdns.default_route_address()
    if expected:
        assert advertiser._addresses() == [expected]
    else:  # no default route on this machine: nothing to announce, said so
        with pytest.raises(OSError, match="no IPv4 address besides loopback"):
            advertiser._addresses()
    assert mdns.Advertiser("10.1.2.3", 8080)._addresses() == ["10.1.2.3"]


def test_the_new_name_is_given_over_ssh_after_the_push(tmp_path):
    # push --install --hostname renames last, through ssh as root: here against a fake root
    # (sshd's SetEnv DESTDIR), never this machine's own name.
    from loopback_device import SSH_CLIENT_OPTIONS, Sshd
    from provisioning.deploy.install import rename
    from provisioning.deploy.push import PushLog
    from provisioning.deploy.remote import Remote

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("raspberrypi\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    sshd = Sshd(tmp_path / "sshd", extra_config=(f"SetEnv DESTDIR={root}",))
    lines: list[str] = []
    remote = Remote("127.0.0.1", port=sshd.port, user=sshd.user, identity=str(sshd.key),
                    ssh_options=SSH_CLIENT_OPTIONS)
    try:
        assert remote.run("printenv DESTDIR").stdout.strip() == str(root)
        url = rename(remote, "Glimpse", 8080, PushLog(lines.append))
        with pytest.raises(InstallFailed, match="is not a host name"):
            rename(remote, "not a name", 8080, PushLog(lines.append))
    finally:
        sshd.stop()
    assert url == "http://glimpse.local:8080/"
    assert (root / "etc" / "hostname").read_text() == "glimpse\n"
    assert "127.0.1.1\tglimpse\n" in (root / "etc" / "hosts").read_text()
    assert [line.split(None, 2)[2] for line in lines] == [
        "hostname: raspberrypi -> glimpse (http://glimpse.local:8080/)"]


def test_hostname_goes_with_install(tmp_path):
    from conftest import run_cli

    proc = run_cli("provisioning", "push", "127.0.0.1", "--bundle", str(tmp_path), "--hostname", "glimpse",
                   check=False, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "glimpse-provision: error: --hostname goes with --install"

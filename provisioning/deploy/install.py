"""``glimpse-provision push --install``: set a fresh device up for Glimpse, then push.

The device side is one POSIX shell script, generated here by :func:`install_script`
and run as root (directly, or through ``sudo -n`` for a user such as ``pi``). Its
steps, each printed as ``install: <step>: ...``:

``user``
    the ``glimpse`` system user and group (the daemon's, as in the systemd unit);
    the ssh login user joins the group, so its pushes can write bundles.
``directories``
    ``DATA_DIR`` (0750, what the unit's ``StateDirectoryMode`` keeps), and
    ``DATA_DIR/bundles`` with ``.incoming`` (2775: group-writable, and setgid so
    every pushed file belongs to the group the daemon reads with).
``glimpse``
    a venv (``/opt/glimpse/venv``) with ``glimpse[device]``: from the wheelhouse
    sent along (``glimpse-provision wheelhouse``; the device needs no internet;
    checked first to hold wheels for the device's Python and CPU), or else
    Glimpse's own wheel, built here, with its dependencies from the index.
``unit``
    ``systemd/glimpse.service`` with ``ExecStart`` for this venv, data directory
    and port, into ``/etc/systemd/system``.
``hostname``
    with ``--hostname NAME``: ``/etc/hostname`` and the ``127.0.1.1`` line of
    ``/etc/hosts`` (Debian's place for the machine's own name), then the running
    name (``hostnamectl``) and avahi-daemon, which answers ``NAME.local``.
    ``push --install`` runs this step last, after the push (:func:`rename`): the
    push reaches the device by its old ``.local`` name, which stops answering.
``avahi``
    ``/etc/avahi/services/glimpse.service``: avahi-daemon (on Raspberry Pi OS)
    announces the web UI as ``_http._tcp`` on the daemon's port, so phones and
    Home Assistant list "Glimpse on NAME"; avahi reads new service files by itself.
``service``
    ``systemctl daemon-reload`` and ``enable``; a running service is restarted
    (an upgrade). The first push starts it, once a bundle is in place.

``DESTDIR`` (an environment variable, as in ``make install``) installs under a
prefix instead of ``/``; the user is then added to ``DESTDIR/etc/passwd``
(``useradd --prefix``) and systemd is left alone. ``GLIMPSE_INSTALL_STEPS``
names the steps to run (default: all, in order).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

from device.datadir import DEFAULT_DATA_DIR
from device.errors import InstallFailed
from provisioning.deploy.push import PushLog, PushOptions
from provisioning.deploy.remote import Remote, last_line, shell
from provisioning.deploy.wheelhouse import PLATFORMS, build_glimpse_wheel, read_manifest, source_tree

#: The unit file, kept once in the source tree (``systemd/``).
UNIT_FILE = Path(__file__).resolve().parents[2] / "systemd" / "glimpse.service"
SERVICE = "glimpse.service"
SERVICE_USER = "glimpse"
VENV = "/opt/glimpse/venv"
#: Where the wheels are staged on the device (the login user writes, root reads).
STAGING = "/var/tmp/glimpse-install"
STEPS = ("user", "directories", "glimpse", "unit", "hostname", "avahi", "service")
#: The avahi service file, under ``/etc/avahi/services``.
AVAHI_SERVICE = "glimpse.service"
#: How a remote command becomes root: as it is for root, through sudo (no password prompt) otherwise.
AS_ROOT = 'if [ "$(id -u)" = 0 ]; then {0}; else sudo -n {0}; fi'


@dataclasses.dataclass(frozen=True)
class InstallOptions:
    """What :func:`install_script` sets up.

    Attributes:
        data_dir: the daemon's data directory.
        venv: where Glimpse is installed (the unit runs ``VENV/bin/glimpse``).
        daemon_port: the port the daemon listens on (on every address: it is an appliance).
        login_user: the ssh user that pushes bundles (joins the service group); ``None`` or root: nobody joins.
        wheelhouse: a wheelhouse directory on the device, or ``None``.
        wheel: a Glimpse wheel on the device (with dependencies from the index), or ``None``.
        unit_text: the systemd unit to adapt (default: :data:`UNIT_FILE`).
        hostname: the device's new host name (``NAME.local`` on the LAN), or ``None`` to keep it.
    """

    data_dir: str = DEFAULT_DATA_DIR
    venv: str = VENV
    daemon_port: int = 8080
    login_user: str | None = None
    wheelhouse: str | None = None
    wheel: str | None = None
    unit_text: str | None = None
    hostname: str | None = None


def check_hostname(name: str) -> str:
    """``name`` if it can be a host name and an mDNS name: one label of letters, digits and
    hyphens (RFC 1123), at most 63 characters, not starting or ending with a hyphen.

    Raises:
        InstallFailed: it cannot, saying what can.
    """
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", name or ""):
        raise InstallFailed(f"--hostname {name!r} is not a host name: use letters, digits and hyphens "
                            "(at most 63, no dots, not starting or ending with a hyphen), e.g. glimpse")
    return name.lower()


def avahi_service(port: int) -> str:
    """The avahi service file announcing the web UI (``_http._tcp`` on ``port``) as "Glimpse on HOSTNAME"."""
    return f"""<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<!-- The Glimpse web UI on the LAN, from glimpse-provision push with its install option. -->
<service-group>
  <name replace-wildcards="yes">Glimpse on %h</name>
  <service>
    <type>_http._tcp</type>
    <port>{int(port)}</port>
    <txt-record>path=/</txt-record>
  </service>
</service-group>
"""


def unit_text(options: InstallOptions) -> str:
    """The systemd unit for ``options``: the committed one with ``ExecStart`` and
    ``ReadWritePaths`` for this venv, data directory and port.

    Raises:
        InstallFailed: the unit file is missing or lacks those lines.
    """
    if options.unit_text is not None:
        text = options.unit_text
    else:
        try:
            text = UNIT_FILE.read_text(encoding="utf-8")
        except OSError:
            raise InstallFailed(f"no systemd unit at {UNIT_FILE}: run glimpse-provision from a Glimpse "
                                f"source checkout") from None
    glimpse = PurePosixPath(options.venv) / "bin" / "glimpse"
    wanted = {
        "ExecStart": shell(glimpse, "serve", "--data-dir", options.data_dir, "--host", "0.0.0.0",
                           "--port", options.daemon_port),
        "ReadWritePaths": options.data_dir,
    }
    lines, seen = [], set()
    for line in text.splitlines():
        key = line.partition("=")[0]
        if key in wanted and not line.startswith("#"):
            line = f"{key}={wanted[key]}"
            seen.add(key)
        lines.append(line)
    if seen != wanted.keys():
        raise InstallFailed(f"the systemd unit lacks {', '.join(sorted(wanted.keys() - seen))}= lines")
    return "\n".join(lines) + "\n"


def install_script(options: InstallOptions) -> str:
    """The device-side install script (POSIX sh, run as root); see the module docstring.

    Raises:
        InstallFailed: neither a wheelhouse nor a wheel is given, or the unit cannot be adapted.
    """
    if options.wheelhouse:
        pip = f'"$VENV/bin/pip" install --quiet --upgrade --no-index --find-links {shell(options.wheelhouse)} \'glimpse[device]\''
        source = f"the wheelhouse {options.wheelhouse} (offline)"
    elif options.wheel:
        pip = f'"$VENV/bin/pip" install --quiet --upgrade {shell(options.wheel + "[device]")}'
        source = f"{PurePosixPath(options.wheel).name} and its dependencies from the index"
    else:
        raise InstallFailed("install needs a wheelhouse or a Glimpse wheel")
    unit = unit_text(options)
    hostname = check_hostname(options.hostname) if options.hostname else ""
    if "\nGLIMPSE_UNIT\n" in f"\n{unit}":
        raise InstallFailed("the systemd unit contains the here-document marker GLIMPSE_UNIT")
    login = options.login_user if options.login_user not in (None, "root") else ""
    return f"""#!/bin/sh
# Generated by glimpse-provision push --install (provisioning/deploy/install.py). Run as root.
set -eu
DESTDIR="${{DESTDIR:-}}"
SERVICE_USER={SERVICE_USER}
LOGIN_USER={shell(login) if login else "''"}
DATA_DIR={shell(options.data_dir)}
PORT={int(options.daemon_port)}
NEW_HOSTNAME={shell(hostname) if hostname else "''"}
VENV="$DESTDIR"{shell(options.venv)}
UNIT="$DESTDIR/etc/systemd/system/{SERVICE}"
say() {{ printf 'install: %s\\n' "$*"; }}
# With DESTDIR, users go into DESTDIR/etc/passwd (useradd --prefix) and ids come from there.
prefix() {{ if [ -n "$DESTDIR" ]; then printf '%s\\n' --prefix "$DESTDIR"; fi; }}
id_of() {{ awk -F: -v name="$2" '$1 == name {{ print $3 }}' "$DESTDIR/etc/$1"; }}

step_user() {{
    if [ -z "$(id_of passwd "$SERVICE_USER")" ]; then
        useradd $(prefix) --system --user-group --home-dir "$DATA_DIR" --no-create-home \\
            --shell /usr/sbin/nologin --comment "Glimpse photo search" "$SERVICE_USER"
        say "user: created system user $SERVICE_USER"
    else
        say "user: $SERVICE_USER exists"
    fi
    if [ -n "$LOGIN_USER" ]; then
        usermod $(prefix) --append --groups "$SERVICE_USER" "$LOGIN_USER"
        say "user: $LOGIN_USER joins group $SERVICE_USER (to push bundles)"
    fi
}}

step_directories() {{
    uid=$(id_of passwd "$SERVICE_USER"); gid=$(id_of group "$SERVICE_USER")
    # install -d would hand an existing folder (a user's photos) to the service user:
    # an existing data directory must be empty or already Glimpse's (it has bundles/).
    if [ -d "$DESTDIR$DATA_DIR" ] && [ ! -d "$DESTDIR$DATA_DIR/bundles" ] && [ -n "$(ls -A "$DESTDIR$DATA_DIR")" ]; then
        say "directories: $DATA_DIR holds other things and is not a Glimpse data directory (no bundles/); left alone: choose another --data-dir"
        exit 1
    fi
    install -d -m 0750 -o "$uid" -g "$gid" "$DESTDIR$DATA_DIR"
    install -d -m 2775 -o "$uid" -g "$gid" "$DESTDIR$DATA_DIR/bundles" "$DESTDIR$DATA_DIR/bundles/.incoming"
    install -d -m 0755 "$DESTDIR/etc/glimpse" "$(dirname "$VENV")"
    say "directories: $DATA_DIR (0750), $DATA_DIR/bundles (2775, group $SERVICE_USER)"
}}

step_glimpse() {{
    python3 -m venv --help >/dev/null 2>&1 || {{ say "glimpse: python3 -m venv is missing (apt install python3-venv)"; exit 1; }}
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    {pip}
    say "glimpse: $("$VENV/bin/glimpse" --help >/dev/null && "$VENV/bin/python" -c 'import device; print("Glimpse", device.__version__)') in $VENV from {source}"
}}

step_unit() {{
    install -d -m 0755 "$(dirname "$UNIT")"
    cat > "$UNIT.tmp" <<'GLIMPSE_UNIT'
{unit}GLIMPSE_UNIT
    chmod 0644 "$UNIT.tmp"
    mv -f "$UNIT.tmp" "$UNIT"
    say "unit: $UNIT"
}}

step_hostname() {{
    if [ -z "$NEW_HOSTNAME" ]; then
        say "hostname: kept ($(cat "$DESTDIR/etc/hostname" 2>/dev/null || hostname)); --hostname NAME changes it"
        return 0
    fi
    old=$(cat "$DESTDIR/etc/hostname" 2>/dev/null || true)
    install -d -m 0755 "$DESTDIR/etc"
    printf '%s\\n' "$NEW_HOSTNAME" > "$DESTDIR/etc/hostname"
    # Debian names the machine itself on 127.0.1.1 (sudo and others look the name up there).
    if [ -f "$DESTDIR/etc/hosts" ] && grep -q '^127\\.0\\.1\\.1[[:space:]]' "$DESTDIR/etc/hosts"; then
        sed -i "s/^127\\.0\\.1\\.1[[:space:]].*/127.0.1.1\\t$NEW_HOSTNAME/" "$DESTDIR/etc/hosts"
    else
        printf '127.0.1.1\\t%s\\n' "$NEW_HOSTNAME" >> "$DESTDIR/etc/hosts"
    fi
    if [ -z "$DESTDIR" ]; then
        if [ -d /run/systemd/system ]; then hostnamectl set-hostname "$NEW_HOSTNAME"; else hostname "$NEW_HOSTNAME"; fi
        # avahi-daemon keeps the name it started with until told.
        if command -v avahi-set-host-name >/dev/null 2>&1; then
            avahi-set-host-name "$NEW_HOSTNAME" 2>/dev/null || true
        elif [ -d /run/systemd/system ]; then
            systemctl try-restart avahi-daemon.service || true
        fi
    fi
    say "hostname: ${{old:-(none)}} -> $NEW_HOSTNAME (http://$NEW_HOSTNAME.local:$PORT/)"
}}

step_avahi() {{
    dir="$DESTDIR/etc/avahi/services"
    install -d -m 0755 "$dir"
    cat > "$dir/{AVAHI_SERVICE}.tmp" <<'GLIMPSE_AVAHI'
{avahi_service(options.daemon_port)}GLIMPSE_AVAHI
    chmod 0644 "$dir/{AVAHI_SERVICE}.tmp"
    mv -f "$dir/{AVAHI_SERVICE}.tmp" "$dir/{AVAHI_SERVICE}"
    if [ -z "$DESTDIR" ] && ! command -v avahi-daemon >/dev/null 2>&1 && [ ! -x /usr/sbin/avahi-daemon ]; then
        say "avahi: $dir/{AVAHI_SERVICE} written, but avahi-daemon is not installed: apt install avahi-daemon, or let Glimpse announce itself (advertise = auto)"
    else
        say "avahi: $dir/{AVAHI_SERVICE} announces _http._tcp on port $PORT"
    fi
}}

step_service() {{
    if [ -n "$DESTDIR" ] || [ ! -d /run/systemd/system ]; then
        say "service: systemd is not running here (or DESTDIR is set): enable and start {SERVICE} by hand"
        return 0
    fi
    systemctl daemon-reload
    systemctl enable --quiet {SERVICE}
    if systemctl is-active --quiet {SERVICE}; then
        systemctl restart {SERVICE}
        say "service: enabled, restarted with the new Glimpse"
    else
        say "service: enabled; the first push starts it"
    fi
}}

for step in ${{GLIMPSE_INSTALL_STEPS:-{" ".join(STEPS)}}}; do
    "step_$step"
done
"""


def check_wheelhouse(manifest: dict, python: str, machine: str) -> None:
    """Refuse a wheelhouse without wheels for the device's Python and CPU.

    Args:
        manifest: the wheelhouse's ``wheelhouse.json`` (see :mod:`provisioning.deploy.wheelhouse`).
        python: the device's ``python3`` version, ``"3.11"`` style.
        machine: the device's CPU (``uname -m``), e.g. ``aarch64``.

    Raises:
        InstallFailed: no target of the wheelhouse matches, naming what it has and what to build.
    """
    targets = manifest.get("targets") or []
    if any(t.get("python") == python and PLATFORMS.get(t.get("platform")) == machine for t in targets):
        return
    has = ", ".join(f"CPython {t.get('python')} {t.get('platform')}" for t in targets) or "no targets"
    raise InstallFailed(f"the wheelhouse has wheels for {has}, but the device runs CPython {python} on {machine}: "
                        f"make one with glimpse-provision wheelhouse --platform linux_{machine} --python {python}")


def rename(remote: Remote, hostname: str, daemon_port: int, log: PushLog) -> str:
    """Give the device a new host name (the ``hostname`` step alone, as root); run after the push.

    Returns:
        The address people type now, ``http://NAME.local:PORT/``.

    Raises:
        InstallFailed: ``hostname`` cannot be a host name, or the step failed.
    """
    name = check_hostname(hostname)
    log.begin()
    # Only the steps' functions are used; no wheel is installed by the hostname step.
    script = install_script(InstallOptions(hostname=name, daemon_port=daemon_port, wheel=f"{STAGING}/unused.whl"))
    proc = remote.run(AS_ROOT.format("env GLIMPSE_INSTALL_STEPS=hostname sh -s"), input=script, timeout=300)
    for line in proc.stdout.splitlines():
        if line.startswith("install: "):
            log.step("install", line.removeprefix("install: "))
    if proc.returncode != 0:
        raise InstallFailed(f"setting the host name failed: {last_line(proc.stderr) or proc.returncode}")
    suffix = "" if daemon_port == 80 else f":{daemon_port}"
    return f"http://{name}.local{suffix}/"


def install(remote: Remote, options: PushOptions, wheelhouse: Path | None, log: PushLog,
            staging: str = STAGING, hostname: str | None = None) -> PushOptions:
    """Set the device up (see the module docstring) and return push options that start the service.

    Args:
        remote: the device.
        options: the push that follows (data directory, daemon port, remote glimpse).
        wheelhouse: a local wheelhouse directory to install from, or ``None`` for the index.
        log: the push log.
        staging: where the wheels go on the device.
        hostname: checked only: the new host name is given after the push, by :func:`rename`.

    Raises:
        InstallFailed: a step failed (its output is in the message), or the wheelhouse
            has no wheels for the device's Python and CPU.
        WheelhouseFailed: ``wheelhouse`` is not a Glimpse wheelhouse, or Glimpse's wheel cannot be built.
        DeviceUnreachable: ssh cannot log in.
    """
    venv = str(PurePosixPath(options.remote_glimpse).parent.parent)
    if hostname:
        check_hostname(hostname)  # before anything is sent
    staging = PurePosixPath(staging)
    log.begin()
    with tempfile.TemporaryDirectory(prefix="glimpse-install-") as tmp:
        if wheelhouse is not None:
            manifest = read_manifest(wheelhouse)  # before anything is sent: is it one, and for this device?
            proc = remote.run("python3 -c 'import platform, sys; print(\"%d.%d\" % sys.version_info[:2], "
                              "platform.machine())'")
            found = proc.stdout.split()
            if proc.returncode != 0 or len(found) != 2:
                raise InstallFailed(f"no python3 on the device: {last_line(proc.stderr)} (apt install python3-venv)")
            check_wheelhouse(manifest, *found)
            local, remote_wheelhouse, wheel = Path(wheelhouse), str(staging / "wheelhouse"), None
        else:
            built = build_glimpse_wheel(source_tree(), Path(tmp), [sys.executable, "-m", "pip"])
            local, remote_wheelhouse, wheel = Path(tmp), None, str(staging / "wheelhouse" / built.name)
        proc = remote.run(shell("mkdir", "-p", staging))
        if proc.returncode != 0:
            raise InstallFailed(f"cannot create {staging} on the device: {last_line(proc.stderr)}")
        command = [*remote.rsync_args(options.rsync_path), "--recursive", "--times", "--delete",
                   f"{local}/", remote.destination(f"{staging}/wheelhouse/")]
        sent = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if sent.returncode != 0:
            raise InstallFailed(f"cannot send the wheels: {last_line(sent.stderr)}")
    log.step("install", f"sent {'the wheelhouse ' + str(wheelhouse) if wheelhouse else 'the Glimpse wheel'} "
                        f"to {staging}")
    # The login user joins the service group; ssh may have chosen it (~/.ssh/config).
    login = remote.user or remote.run("id -un").stdout.strip() or None
    script = install_script(InstallOptions(
        data_dir=options.data_dir, venv=venv, daemon_port=options.daemon_port or 8080,
        login_user=login, wheelhouse=remote_wheelhouse, wheel=wheel))
    proc = remote.run(AS_ROOT.format("sh -s"), input=script, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("install: "):
            log.step("install", line.removeprefix("install: "))
    if proc.returncode != 0:
        raise InstallFailed(f"the install script failed: {last_line(proc.stderr) or proc.returncode}")
    start = AS_ROOT.format(shlex.join(["systemctl", "restart", SERVICE]))
    return dataclasses.replace(options, start_command=start, health_wait=max(options.health_wait, 120))

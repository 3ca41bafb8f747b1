"""``glimpse-provision push HOST``: put a bundle on a device, switch to it, or roll back.

The device's data directory (see :mod:`device.datadir`)::

    DATA_DIR/current -> bundles/<id>      the bundle the daemon serves
    DATA_DIR/bundles/<id>/                complete, verified bundles
    DATA_DIR/bundles/.incoming/<id>/      transfers in progress (never served)

A push is a sequence of steps, each one line of the push log with its time:

``check``
    the bundle verifies here: a broken bundle is never sent.
``probe``
    what the device has: the served bundle, the others, an interrupted transfer.
``transfer``
    ``rsync`` into ``bundles/.incoming/<id>/``. ``--partial-dir`` keeps a file cut
    off mid-way so a re-run resumes it; ``--link-dest`` against the served bundle
    hard-links (or copies locally) every file it already has, so unchanged
    thumbnails and the model are not sent again.
``verify``
    the device's own ``glimpse verify`` checks every sha256 in the manifest.
``move``
    rename into ``bundles/<id>`` (same filesystem, so atomic).
``switch``
    ``glimpse reload --bundle-name <id>``: the daemon verifies in full once more
    and only then moves ``current`` (atomically) and serves the new bundle.
``health``
    ``glimpse health`` on the device must report the new bundle id.
``prune``
    keep the newest ``keep`` bundles; the served and the previous one always stay.

If a step fails the push rolls back: the daemon is switched back to the previous
bundle (or, when no daemon answers, ``current`` is pointed back at it so it is
what starts), the new bundle goes back to ``.incoming`` (a re-run picks it up
without sending anything), and a half-copied transfer is removed only when it
cannot be resumed (the disk is full, or the copy failed verification: rsync
would not send a same-size, same-time file again). The daemon only ever
switches to a bundle that passed its own full verification, so it never serves
a half-copied one, whatever happens to the push.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import subprocess
import time
from pathlib import Path, PurePosixPath
from typing import Callable

from device.bundle import Bundle
from device.datadir import BUNDLES_DIR, CURRENT_LINK, DEFAULT_DATA_DIR, INCOMING_DIR
from device.errors import DiskFull, GlimpseError, PushFailed
from device.wording import plural
from provisioning.deploy.remote import DeviceUnreachable, Remote, last_line, shell

#: Where rsync keeps a file cut off mid-transfer, inside the incoming bundle.
PARTIAL_DIR = ".rsync-partial"
#: Names ``write_manifest`` gives bundles: creation time, then content hash.
BUNDLE_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
#: What a bundle id must look like to become a directory name on the device: the id
#: comes from the manifest, and ``../x`` would reach outside ``bundles/``.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: How long ``glimpse verify`` and ``glimpse reload`` may take on a Pi's SD card
#: (both read every byte of the bundle).
VERIFY_TIMEOUT = 1800


@dataclasses.dataclass
class PushOptions:
    """Options of :func:`push`.

    Attributes:
        remote: the device (host, port, user, key, ssh options).
        bundle: the local bundle directory to send.
        data_dir: the device's data directory.
        remote_glimpse: the ``glimpse`` command on the device.
        daemon_port: the daemon's port on the device (``None``: as the device's
            own configuration says, 8080 unless changed).
        keep: how many bundles to keep on the device: the served one, the
            previous one (always kept, even with ``keep=1``), then the newest others.
        rsync_path: the ``rsync`` command on the device (e.g. ``sudo -u glimpse rsync``).
        rsync_options: extra rsync options, e.g. ``--bwlimit=2000`` on a slow link.
        health_wait: seconds ``glimpse health`` keeps asking a daemon that does not answer yet.
        start_command: a device command that starts the daemon, run when the
            device had no bundle before (``push --install`` sets it).
    """

    remote: Remote
    bundle: Path
    data_dir: str = DEFAULT_DATA_DIR
    remote_glimpse: str = "/opt/glimpse/venv/bin/glimpse"
    daemon_port: int | None = None
    keep: int = 3
    rsync_path: str | None = None
    rsync_options: tuple[str, ...] = ()
    health_wait: float = 10.0
    start_command: str | None = None


@dataclasses.dataclass
class DeviceState:
    """What :func:`probe` found on the device.

    Attributes:
        link: the ``current`` link's text as it was (``None``: no link).
        current: the served bundle's directory name under ``bundles/`` (``None``
            when there is no link or it points elsewhere).
        bundles: directory names under ``bundles/`` (complete bundles).
        incoming: directory names under ``bundles/.incoming/`` (unfinished transfers).
    """

    link: str | None
    current: str | None
    bundles: list[str]
    incoming: list[str]


@dataclasses.dataclass
class PushResult:
    """What a successful :func:`push` did.

    Attributes:
        bundle_id: the bundle now serving.
        previous: the bundle directory name served before (``None``: none).
        removed: bundle directories pruned.
        seconds: wall time of the whole push.
    """

    bundle_id: str
    previous: str | None
    removed: list[str]
    seconds: float


class PushLog:
    """The push log: one line per step with its duration, to ``write`` (stdout by default).

    Args:
        write: called with each line.
    """

    def __init__(self, write: Callable[[str], None] | None = None):
        self.write = write or (lambda line: print(line, flush=True))
        self.started = time.monotonic()
        self._step_started = self.started

    def begin(self) -> None:
        """Start timing the next step."""
        self._step_started = time.monotonic()

    def step(self, name: str, message: str, failed: bool = False) -> None:
        """Log the step that began at the last :meth:`begin`."""
        took = time.monotonic() - self._step_started
        self.write(f"{name:<9}{took:6.2f}s  {'FAILED: ' if failed else ''}{message}")
        self._step_started = time.monotonic()

    def line(self, message: str) -> None:
        """A line outside any step (the header and the summary)."""
        self.write(message)

    @property
    def elapsed(self) -> float:
        """Seconds since the log began."""
        return time.monotonic() - self.started


class _Push:
    """One push in progress: its paths, what it changed, and how to undo it."""

    def __init__(self, options: PushOptions, bundle: Bundle, log: PushLog):
        self.options = options
        self.remote = options.remote
        self.bundle = bundle
        self.log = log
        self.id = bundle.id
        self.data_dir = PurePosixPath(options.data_dir)
        self.bundles = self.data_dir / BUNDLES_DIR
        self.incoming = self.bundles / INCOMING_DIR / self.id
        self.target = self.bundles / self.id
        self.state: DeviceState | None = None
        self.moved = False  # this push renamed incoming/<id> into bundles/<id>
        self.switch_attempted = False

    # --- device commands ------------------------------------------------------------------

    def glimpse(self, *words, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the device's ``glimpse`` with ``words``."""
        return self.remote.run(shell(self.options.remote_glimpse, *words), timeout=timeout)

    def remove(self, names: list[str]) -> subprocess.CompletedProcess:
        """``glimpse remove-bundle``: delete ``names`` under ``bundles/``, each proven Glimpse's own on the device."""
        return self.glimpse("remove-bundle", "--data-dir", str(self.data_dir), *names, timeout=600)

    def daemon_args(self) -> list[str]:
        return ["--port", str(self.options.daemon_port)] if self.options.daemon_port else []

    # --- steps ----------------------------------------------------------------------------

    def probe(self) -> DeviceState:
        script = f"""
D={shell(self.data_dir)}
G={shell(self.options.remote_glimpse)}
[ -d "$D" ] || {{ echo "error=no data directory $D on the device (push --install creates it)"; exit 0; }}
mkdir -p "$D/{BUNDLES_DIR}/{INCOMING_DIR}" 2>/dev/null || {{ echo "error=cannot write to $D/{BUNDLES_DIR} as $(id -un)"; exit 0; }}
[ -x "$G" ] || {{ echo "error=no Glimpse at $G on the device (push --install sets it up)"; exit 0; }}
if [ -L "$D/{CURRENT_LINK}" ]; then echo "link=$(readlink "$D/{CURRENT_LINK}")"; fi
for f in "$D/{BUNDLES_DIR}"/*; do [ -d "$f" ] && echo "bundle=${{f##*/}}"; done
for f in "$D/{BUNDLES_DIR}/{INCOMING_DIR}"/*; do [ -d "$f" ] && echo "incoming=${{f##*/}}"; done
exit 0
"""
        proc = self.remote.run(f"sh -c {shell(script)}")
        fields: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            fields.setdefault(key, []).append(value)
        if proc.returncode != 0 or "error" in fields:
            reason = (fields.get("error") or [last_line(proc.stderr) or f"exit status {proc.returncode}"])[0]
            raise PushFailed(reason)
        link = (fields.get("link") or [None])[0]
        return DeviceState(link=link, current=self._bundle_name(link),
                           bundles=sorted(fields.get("bundle", [])), incoming=sorted(fields.get("incoming", [])))

    def _bundle_name(self, link: str | None) -> str | None:
        """The directory name under ``bundles/`` that ``link`` points at, if it does."""
        if not link:
            return None
        target = PurePosixPath(posixpath.normpath(self.data_dir / link))  # absolute links stay as they are
        return target.name if target.parent == self.bundles else None

    def transfer(self) -> str:
        command = [*self.remote.rsync_args(self.options.rsync_path), "--archive", "--stats",
                   f"--partial-dir={PARTIAL_DIR}",
                   # Files belong to the login user and (setgid bundles/) the daemon's group, readable
                   # by it whatever the modes on the host were (a build directory may be 0700).
                   "--no-owner", "--no-group", "--chmod=D755,F644",
                   # A stalled link fails the step instead of hanging the push.
                   "--timeout=120"]
        if self.state.link:
            served = posixpath.normpath(self.data_dir / self.state.link)  # an absolute link stays as it is
            command.append(f"--link-dest={served}")
        command += [*self.options.rsync_options, f"{self.bundle.path}/", self.remote.destination(f"{self.incoming}/")]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise PushFailed(f"cannot run rsync: {exc}") from None
        if proc.returncode != 0:
            if "No space left on device" in proc.stderr or "Disk quota exceeded" in proc.stderr:
                raise DiskFull(f"the device's disk is full ({self.data_dir}): "
                               f"{_rsync_error(proc.stderr)}; free some space or lower --keep")
            raise PushFailed(f"rsync exit status {proc.returncode}: {_rsync_error(proc.stderr)}; "
                             f"run the same push again to resume the transfer")
        return _describe_stats(proc.stdout)

    def verify(self) -> str:
        proc = self.glimpse("verify", "--bundle", self.incoming, timeout=VERIFY_TIMEOUT)
        if proc.returncode != 0:
            raise PushFailed(f"the copy on the device failed verification: {last_line(proc.stderr)}")
        return last_line(proc.stdout).replace(f"{self.incoming}: ", "")

    def move(self) -> str:
        # mv -T renames the directory itself (rename(2), atomic on one filesystem) and
        # refuses to drop it inside an existing bundles/<id>.
        proc = self.remote.run(shell("mv", "-T", self.incoming, self.target))
        if proc.returncode != 0:
            raise PushFailed(f"cannot move the bundle into place: {last_line(proc.stderr)}")
        self.moved = True
        return f"{BUNDLES_DIR}/{INCOMING_DIR}/{self.id} -> {BUNDLES_DIR}/{self.id}"

    def switch(self) -> str:
        self.switch_attempted = True
        if self.state.link is None:
            return self._first_switch()
        proc = self.glimpse("reload", "--bundle-name", self.id, *self.daemon_args(), timeout=VERIFY_TIMEOUT)
        if proc.returncode != 0:
            raise PushFailed(f"the daemon did not switch: {_glimpse_error(proc)}")
        return last_line(proc.stdout)

    def _first_switch(self) -> str:
        """No bundle served before: point ``current`` at the new one, then start or reload the daemon."""
        self._set_link(f"{BUNDLES_DIR}/{self.id}")
        if self.options.start_command:
            proc = self.remote.run(self.options.start_command, timeout=300)
            if proc.returncode != 0:
                raise PushFailed(f"cannot start the daemon: {last_line(proc.stderr) or proc.returncode}")
            return f"{CURRENT_LINK} -> {BUNDLES_DIR}/{self.id}; started the daemon"
        proc = self.glimpse("reload", *self.daemon_args(), timeout=VERIFY_TIMEOUT)
        if proc.returncode != 0:
            raise PushFailed(f"{CURRENT_LINK} points at {self.id} now, but the daemon did not load it: "
                             f"{_glimpse_error(proc)}; start the service (systemctl start glimpse)")
        return f"{CURRENT_LINK} -> {BUNDLES_DIR}/{self.id}; {last_line(proc.stdout)}"

    def _set_link(self, text: str) -> None:
        """Point ``current`` at ``text`` atomically (a new link renamed over the old one)."""
        link = self.data_dir / CURRENT_LINK
        tmp = self.data_dir / f".{CURRENT_LINK}.push"
        command = f"{shell('ln', '-sfn', text, tmp)} && {shell('mv', '-Tf', tmp, link)}"
        # DATA_DIR belongs to the daemon's user (0750): a login user that may write
        # bundles/ may still need sudo for the link itself.
        proc = self.remote.run(f'out=$({{ {command}; }} 2>&1) || '
                               f'{{ [ "$(id -u)" != 0 ] && sudo -n sh -c {shell(command)} 2>/dev/null; }} || '
                               f'{{ printf "%s\\n" "$out" >&2; exit 1; }}')
        if proc.returncode != 0:
            raise PushFailed(f"cannot point {link} at {text}: {last_line(proc.stderr)}")

    def health(self, expected: str | None) -> dict:
        proc = self.glimpse("health", "--wait", f"{self.options.health_wait:g}", *self.daemon_args(),
                            timeout=self.options.health_wait + 60)
        if proc.returncode != 0:
            raise PushFailed(f"health check: {_glimpse_error(proc)}")
        try:
            answer = json.loads(last_line(proc.stdout))
        except ValueError:
            raise PushFailed(f"health check: unreadable answer {last_line(proc.stdout)!r}") from None
        if expected and answer.get("bundle_id") != expected:
            raise PushFailed(f"health check: /healthz reports bundle {answer.get('bundle_id')}, not {expected}")
        return answer

    def prune(self) -> tuple[list[str], str]:
        # The served and the previous bundle first, then the newest others up to `keep`.
        keep = [self.id] + ([self.state.current] if self.state.current else [])
        present = set(self.state.bundles) | {self.id}
        ids = sorted((name for name in present if BUNDLE_ID.match(name)), reverse=True)  # newest first
        for name in ids:
            if len(keep) >= self.options.keep:
                break
            if name not in keep:
                keep.append(name)
        removed = sorted(name for name in ids if name not in keep)
        stale = [name for name in self.state.incoming if name != self.id]
        names = removed + [f"{INCOMING_DIR}/{name}" for name in stale]
        if names:
            # The device's own glimpse removes each one only after proving it is a bundle it
            # wrote (an unfinished transfer: a directory under .incoming), never `current`.
            proc = self.remove(names)
            done = {line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("removed ")}
            if proc.returncode != 0:
                removed = [name for name in removed if name in done]
                return removed, (f"removed {', '.join(sorted(done)) or 'nothing'}; left {_glimpse_error(proc)} "
                                 "(the push itself succeeded)")
        others = sorted(present - set(keep) - set(removed))
        message = f"kept {', '.join(keep)}"
        if removed:
            message += f"; removed {', '.join(removed)}"
        if stale:
            message += f"; removed unfinished transfers {', '.join(stale)}"
        if others:
            message += f"; left alone (not named by bundle id): {', '.join(others)}"
        return removed, message

    # --- rollback -------------------------------------------------------------------------

    def discard_incoming(self) -> None:
        """Remove the incoming copy (it cannot be resumed); a failure here only warns."""
        self.log.begin()
        proc = self.remove([f"{INCOMING_DIR}/{self.id}"])
        if proc.returncode == 0:
            self.log.step("cleanup", f"removed {BUNDLES_DIR}/{INCOMING_DIR}/{self.id} (not resumable)")
        else:
            self.log.step("cleanup", f"could not remove {self.incoming}: {_glimpse_error(proc)}", failed=True)

    def rollback(self) -> str:
        """Undo a failed switch; returns what serves now, for the error message."""
        state = self.state
        message = "nothing was switched"
        if self.switch_attempted and state.link is None:
            message = f"no bundle served before this push; {CURRENT_LINK} is left pointing at {self.id}"
            return message
        if self.switch_attempted:
            message = self._switch_back()
        if self.moved and self._link_now() != f"{BUNDLES_DIR}/{self.id}":
            # Back to incoming: bundles/ holds only bundles that served, and a re-run
            # finds the verified copy there and sends nothing.
            self.log.begin()
            proc = self.remote.run(shell("mv", "-T", self.target, self.incoming))
            if proc.returncode == 0:
                self.log.step("rollback", f"moved {self.id} back to {BUNDLES_DIR}/{INCOMING_DIR}")
            else:
                self.log.step("rollback", f"could not move {self.id} back: {last_line(proc.stderr)}", failed=True)
        return message

    def _link_now(self) -> str | None:
        proc = self.remote.run(shell("readlink", self.data_dir / CURRENT_LINK))
        return proc.stdout.strip() if proc.returncode == 0 else None

    def _switch_back(self) -> str:
        previous, link = self.state.current, self.state.link
        self.log.begin()
        if self._link_now() == link:
            # The daemon moves the link only once it serves the new bundle: a refused
            # or unanswered switch changed nothing.
            self.log.step("rollback", f"nothing to undo: {CURRENT_LINK} still points at {link}")
            return f"{CURRENT_LINK} still points at {link}, as before the push"
        if previous:
            proc = self.glimpse("reload", "--bundle-name", previous, *self.daemon_args(), timeout=VERIFY_TIMEOUT)
            if proc.returncode == 0:
                self.log.step("rollback", f"switched back: {last_line(proc.stdout)}")
                self.log.begin()
                try:
                    answer = self.health(None)
                except PushFailed as exc:
                    self.log.step("rollback", str(exc), failed=True)
                    return f"{CURRENT_LINK} points at {previous} again, but the daemon's health check fails"
                self.log.step("rollback", f"/healthz reports {answer['bundle_id']}, {plural(answer.get('items') or 0, 'photo')}")
                return f"{previous} is serving again"
            self.log.step("rollback", f"the daemon did not switch back: {_glimpse_error(proc)}", failed=True)
            self.log.begin()
        # The daemon did not switch back (or the old bundle is not under bundles/): point
        # the link back ourselves, so the old bundle is what a (re)starting daemon serves.
        try:
            self._set_link(link)
        except PushFailed as exc:
            self.log.step("rollback", str(exc), failed=True)
            return f"ROLLBACK FAILED: {exc}; check {self.data_dir / CURRENT_LINK} on the device"
        self.log.step("rollback", f"{CURRENT_LINK} -> {link} again")
        if not previous:
            self.log.begin()
            proc = self.glimpse("reload", *self.daemon_args(), timeout=VERIFY_TIMEOUT)
            if proc.returncode == 0:
                self.log.step("rollback", last_line(proc.stdout))
                return f"{CURRENT_LINK} points at {link} again and the daemon serves it"
            self.log.step("rollback", f"the daemon did not reload: {_glimpse_error(proc)}", failed=True)
        return f"{CURRENT_LINK} points at {link} again (the daemon did not answer; it serves that when it starts)"


def push(options: PushOptions, log: PushLog | None = None) -> PushResult:
    """Send a bundle to a device, switch the daemon to it, or roll back.

    Args:
        options: what to push where (see :class:`PushOptions`).
        log: where the push log goes (default: stdout).

    Returns:
        What was done (see :class:`PushResult`).

    Raises:
        BundleInvalid: the local bundle fails verification (nothing was sent).
        PushFailed: a step failed; the device was rolled back (the message says
            to what). :class:`DiskFull` when the device ran out of space.
        DeviceUnreachable: ssh cannot log in to the device.
        ToolMissing: no ``ssh`` or ``rsync`` here.
    """
    log = log or PushLog()
    if options.keep < 1:
        raise PushFailed("--keep must be at least 1")
    with options.remote.shared_connection() as remote:
        return _push(dataclasses.replace(options, remote=remote), log)


def _push(options: PushOptions, log: PushLog) -> PushResult:
    remote = options.remote
    log.line(f"push {options.bundle} to {remote.login}:{options.data_dir} (ssh port {remote.port})")
    log.begin()
    bundle = Bundle.open(options.bundle, verify="full")
    if not SAFE_NAME.match(str(bundle.id)):
        raise PushFailed(f"{options.bundle}: bundle id {bundle.id!r} cannot be a directory name on the device")
    size = sum(entry["size"] for entry in bundle.manifest["files"].values())
    log.step("check", f"bundle {bundle.id}: {plural(len(bundle), 'photo')}, {plural(len(bundle.manifest['files']), 'file')}, "
                      f"{_megabytes(size)}, intact")
    job = _Push(options, bundle, log)
    step = "probe"
    try:
        job.state = state = job.probe()
        log.step("probe", _describe_state(state, bundle.id))
        if state.current == bundle.id:
            step = "health"
            answer = job.health(bundle.id)
            log.step("health", f"/healthz reports {answer['bundle_id']}, {plural(answer.get('items') or 0, 'photo')}: "
                               f"already serving, nothing to send")
            return PushResult(bundle.id, state.current, [], log.elapsed)
        if bundle.id not in state.bundles:
            step = "transfer"
            log.step("transfer", job.transfer())
            step = "verify"
            log.step("verify", job.verify())
            step = "move"
            log.step("move", job.move())
        step = "switch"
        log.step("switch", job.switch())
        step = "health"
        answer = job.health(bundle.id)
        log.step("health", f"/healthz reports {answer['bundle_id']}, {plural(answer.get('items') or 0, 'photo')}")
    except (GlimpseError, KeyboardInterrupt) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        log.step(step, reason, failed=True)
        if job.state is None:  # nothing was changed on the device
            raise
        try:
            if step == "verify" or isinstance(exc, DiskFull):
                job.discard_incoming()
            outcome = job.rollback()
        except DeviceUnreachable as lost:
            outcome = (f"the device cannot be reached to roll back ({lost}); it only ever switches to a "
                       f"verified bundle: push again when it is back")
        log.line(f"push failed at {step} after {log.elapsed:.1f}s")
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = DiskFull if isinstance(exc, DiskFull) else PushFailed
        raise error(f"push of {bundle.id} to {remote.login} failed at {step}: {reason}; {outcome}") from None
    log.begin()
    removed, message = job.prune()
    log.step("prune", message)
    log.line(f"done in {log.elapsed:.1f}s: {remote.login} serves {bundle.id}"
             + (f" (was {state.current})" if state.current else ""))
    return PushResult(bundle.id, state.current, removed, log.elapsed)


def _describe_state(state: DeviceState, bundle_id: str) -> str:
    serving = f"serving {state.current}" if state.current else (
        f"{CURRENT_LINK} -> {state.link}" if state.link else "no bundle served yet")
    others = [name for name in state.bundles if name != state.current]
    text = serving + (f"; also on the device: {', '.join(others)}" if others else "")
    if bundle_id in state.incoming:
        text += f"; picking up the earlier transfer of {bundle_id} (only what it lacks is sent)"
    elif bundle_id in state.bundles:
        text += f"; {bundle_id} is already on the device, nothing to send"
    return text


_STATS = {
    "files": re.compile(r"^Number of regular files transferred: ([\d,.]+)", re.M),
    "literal": re.compile(r"^Literal data: ([\d,.]+) bytes", re.M),
    "matched": re.compile(r"^Matched data: ([\d,.]+) bytes", re.M),
    "sent": re.compile(r"^Total bytes sent: ([\d,.]+)", re.M),
    "size": re.compile(r"^Total file size: ([\d,.]+) bytes", re.M),
}


def _describe_stats(stdout: str) -> str:
    """rsync's ``--stats`` as one line: what was sent, what the device already had."""
    figures = {}
    for key, pattern in _STATS.items():
        match = pattern.search(stdout)
        if match:
            figures[key] = int(re.sub(r"[,.]", "", match.group(1)))
    if not {"sent", "size", "literal"} <= figures.keys():
        return "done"
    return (f"sent {_megabytes(figures['sent'])} for a {_megabytes(figures['size'])} bundle "
            f"({_megabytes(figures['literal'])} of new data, the rest was on the device); "
            f"{figures.get('files', 0)} file{'' if figures.get('files') == 1 else 's'} written")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _rsync_error(stderr: str) -> str:
    """The first line rsync gives as the cause (its last line is only the exit summary)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith("rsync error:")]
    return (causes or lines or ["no message"])[0]


def _glimpse_error(proc: subprocess.CompletedProcess) -> str:
    """The ``glimpse: error: ...`` line of a device command, without its prefix."""
    line = last_line(proc.stderr) or last_line(proc.stdout) or f"exit status {proc.returncode}"
    return line.removeprefix("glimpse: error: ")


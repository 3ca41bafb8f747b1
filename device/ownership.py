"""What Glimpse owns on disk, and the one safe way to replace or remove it.

Every command that writes or deletes a directory goes through here, because the
founding rule is "never delete what Glimpse did not create":

* :func:`check_apart` refuses an output that is an input (the photo folder, a
  bundle, a source tree), an ancestor of it or inside it. Paths are compared
  after resolving symlinks, so ``lib -> /photos`` does not hide ``/photos``.
* :func:`identify` says whether a directory is Glimpse's own: a bundle whose
  manifest names every file in it, a model directory whose ``model.json`` reads
  as a Glimpse model, a directory with a Glimpse marker file (a wheelhouse's
  ``wheelhouse.json``), or an empty directory. Anything else is the user's.
* :func:`replacing` writes a new directory beside the old one (a sibling, so
  the final rename stays on one filesystem), sets its modes, and only when it is
  complete swaps it in; a failure leaves the old directory as it was and removes
  the half-written one.
* :func:`remove_owned` deletes a directory only once :func:`identify` proved it
  ours; :func:`remove_bundles` is the device's pruning (``glimpse remove-bundle``).
* :func:`check_replaceable_file` and :func:`write_file` do the same for a single
  output file (``export-tasklib``'s ``.tflite``).
* :func:`unreadable` explains a tree this process may not read (owner, mode, the
  command that fixes it), for ``glimpse verify`` and the daemon's start-up.

Modes: :data:`SHARED` (0755 directories, 0644 files) whatever the umask, so a
bundle copied with ``sudo cp -r`` stays readable by the service's own user;
:data:`PRIVATE` (0700, 0600) when the user asks for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from device.datadir import BUNDLES_DIR, CURRENT_LINK, INCOMING_DIR
from device.errors import OutputRefused

#: What :func:`identify` recognises.
KINDS = ("bundle", "model", "marked", "empty")


@dataclasses.dataclass(frozen=True)
class Modes:
    """Permission bits given to every directory and file of a tree Glimpse writes."""

    directory: int
    file: int


#: World-readable: photos are not secrets on the device that serves them, and the
#: service runs as its own user.
SHARED = Modes(0o755, 0o644)
#: Owner only, for a user who asks for it (``build --private``).
PRIVATE = Modes(0o700, 0o600)


def real(path: Path | str) -> Path:
    """``path`` absolute with every symlink resolved (the path that is really written)."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def check_apart(out: Path | str, inputs: Iterable[tuple[str, Path | str]], option: str = "--out",
                allow_inside: bool = False) -> None:
    """Refuse ``out`` when it is one of ``inputs``, contains one, or lies inside one.

    Args:
        out: the directory (or file) a command writes or replaces.
        inputs: (what, path) pairs, e.g. ``("the photo folder", images)``.
        option: the option that named ``out``, for the message.
        allow_inside: ``out`` may lie inside an input (a wheelhouse inside the
            source tree); it still may not be the input or contain it.

    Raises:
        OutputRefused: naming both paths and what to do.
    """
    target = real(out)
    for what, path in inputs:
        source = real(path)
        if target == source:
            raise OutputRefused(f"{option} {out} is {what} ({source}); write to a new directory elsewhere")
        if target in source.parents:
            raise OutputRefused(f"{option} {out} contains {what} ({source}): replacing it would delete it; "
                                f"write to a new directory outside it")
        if source in target.parents and not allow_inside:
            raise OutputRefused(f"{option} {out} is inside {what} ({source}); write to a directory outside it")


Marker = tuple[str, str]


def identify(path: Path | str, markers: Iterable[Marker] = ()) -> str | None:
    """Which kind of Glimpse directory ``path`` is, or ``None`` if it is not Glimpse's own.

    Args:
        path: an existing directory.
        markers: (file name, format) pairs of Glimpse marker files: a JSON file in
            the directory whose ``format`` is that value (e.g. ``("wheelhouse.json",
            "glimpse-wheelhouse")``).

    Returns:
        ``"empty"``, ``"bundle"`` (its manifest is a Glimpse bundle manifest that
        names every file in the directory), ``"model"`` (``model.json`` reads as a
        Glimpse model, the files it names are there, and nothing else is but
        :data:`device.model.COMPANION_FILES`), ``"marked"`` or ``None``.
    """
    from device import bundle as bundle_format  # device.bundle imports numpy: only when needed
    from device.errors import ModelInvalid
    from device.model import COMPANION_FILES, SPEC_NAME, read_spec

    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return None
    if not any(path.iterdir()):
        return "empty"
    if (path / bundle_format.MANIFEST).is_file():
        manifest = _json(path / bundle_format.MANIFEST)
        if isinstance(manifest, dict) and manifest.get("format") == bundle_format.BUNDLE_FORMAT \
                and isinstance(manifest.get("files"), dict):
            listed = set(manifest["files"]) | {bundle_format.MANIFEST}
            present = {p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir()}
            return "bundle" if present <= listed else None
        return None
    if (path / SPEC_NAME).is_file():
        try:
            spec = read_spec(path, verify=False)
        except ModelInvalid:
            return None
        allowed = {SPEC_NAME, *COMPANION_FILES, *spec.files}
        present = {entry.name for entry in os.scandir(path)}
        whole = all((path / name).is_file() for name in spec.files)
        return "model" if whole and present <= allowed else None
    for name, format_name in markers:
        doc = _json(path / name) if (path / name).is_file() else None
        if isinstance(doc, dict) and doc.get("format") == format_name:
            return "marked"
    return None


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def describe(path: Path | str) -> str:
    """A short account of what ``path`` holds, for a refusal message."""
    path = Path(path)
    if path.is_symlink():
        return f"a symlink to {os.readlink(path)}"
    if not path.is_dir():
        return "a file"
    try:
        names = sorted(entry.name for entry in os.scandir(path))
    except OSError as exc:
        return f"a directory Glimpse cannot list ({exc.strerror})"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} ({shown})"


def check_replaceable(out: Path | str, kinds: Iterable[str], force: bool, what: str,
                      markers: Iterable[Marker] = (), option: str = "--force") -> None:
    """Refuse to replace ``out`` unless it is absent, or ``force`` and Glimpse's own of one of ``kinds``.

    Args:
        out: the directory a command is about to replace.
        kinds: what may be replaced (see :func:`identify`); an empty directory always may.
        force: the user asked to replace an existing directory.
        what: what the command writes, for the message ("a bundle").
        markers: passed to :func:`identify`.
        option: the option that allows replacing.

    Raises:
        OutputRefused: ``out`` exists and may not be replaced, saying what it holds and what to do.
    """
    out = Path(out)
    if not os.path.lexists(out):
        return
    kind = identify(out, markers)
    if kind == "empty" or (kind is not None and kind in kinds):
        if force:
            return
        raise OutputRefused(f"{out} exists; pass {option} to replace it")
    held = f"a Glimpse {kind}" if kind else describe(out)
    raise OutputRefused(f"{out} holds {held}, not {what} Glimpse wrote, and Glimpse replaces only that or an "
                        f"empty directory; choose another output, or move {out} away yourself")


def check_replaceable_file(out: Path | str, force: bool, what: str, magic: tuple[int, bytes],
                           option: str = "--force") -> None:
    """Refuse to replace the file ``out`` unless it is absent, or ``force`` and it is ``what`` by its magic bytes.

    Args:
        out: the file a command is about to write.
        force: the user asked to replace an existing file.
        what: what the command writes ("a TFLite model").
        magic: (offset, bytes) every such file carries (a TFLite model: ``(4, b"TFL3")``).
        option: the option that allows replacing.

    Raises:
        OutputRefused: ``out`` is a directory, exists without ``force``, or is some other file.
    """
    out = Path(out)
    if not os.path.lexists(out):
        return
    if out.is_dir():
        raise OutputRefused(f"{out} is a directory holding {describe(out)}; name the file to write inside it or elsewhere")
    if not force:
        raise OutputRefused(f"{out} exists; pass {option} to replace it")
    offset, expected = magic
    try:
        with open(out, "rb") as handle:
            head = handle.read(offset + len(expected))
    except OSError as exc:
        raise OutputRefused(f"{out} cannot be read ({exc.strerror}); choose another output") from None
    if head[offset:] != expected:
        raise OutputRefused(f"{out} is not {what}: {option} replaces only that; choose another output, "
                            f"or move {out} away yourself")


def write_file(out: Path | str, data: bytes, modes: Modes = SHARED) -> None:
    """Write ``data`` to ``out`` through a sibling temporary file renamed over it: whole or not at all."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, modes.file)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def replacing(out: Path | str, kinds: Iterable[str], what: str, force: bool = False,
              inputs: Iterable[tuple[str, Path | str]] = (), modes: Modes | None = SHARED,
              markers: Iterable[Marker] = ()) -> Iterator[Path]:
    """A new directory beside ``out`` to write into; swapped in for ``out`` when the block succeeds.

    The checks of :func:`check_apart` and :func:`check_replaceable` run first,
    and again just before the swap (a long build gives time for ``out`` to change).
    Until the swap the old ``out`` is untouched; an exception in the block removes
    the new directory and leaves ``out`` as it was.

    Args:
        out: the directory to write.
        kinds, what, force, markers: see :func:`check_replaceable`.
        inputs: see :func:`check_apart`.
        modes: applied to the whole new tree before the swap (``None``: leave as written).

    Yields:
        The new directory (empty), in ``out``'s parent.

    Raises:
        OutputRefused: ``out`` may not be written or replaced.
    """
    kinds, inputs, markers = tuple(kinds), list(inputs), tuple(markers)
    out = real(out)
    check_apart(out, inputs)
    check_replaceable(out, kinds, force, what, markers)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        yield work
        if modes is not None:
            set_modes(work, modes)
        check_apart(out, inputs)
        check_replaceable(out, kinds, force, what, markers)
        _swap_in(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _swap_in(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; an existing ``out`` (already proven ours) is removed after."""
    if not os.path.lexists(out):
        os.rename(new, out)
        return
    if _exchange(new, out):
        # `new` now holds the old directory. The swap is done: a failure to delete it
        # leaves it beside (the caller's cleanup tries again), not an error.
        shutil.rmtree(new, ignore_errors=True)
        return
    # No atomic exchange on this filesystem: set the old aside, move the new in,
    # put the old back if that fails. `out` is missing only between two renames.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old)  # onto the empty placeholder: rename(2) replaces an empty directory
    try:
        os.rename(new, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_owned(path: Path | str, kinds: Iterable[str], what: str) -> None:
    """Delete the directory ``path`` after proving it is Glimpse's own of one of ``kinds``.

    Raises:
        OutputRefused: it is not (a symlink, a file, or a directory holding other things).
    """
    path = Path(path)
    kind = identify(path)
    if kind is None or (kind != "empty" and kind not in kinds):
        held = f"a Glimpse {kind}" if kind else describe(path)
        raise OutputRefused(f"{path} holds {held}, not {what} Glimpse wrote; left alone")
    shutil.rmtree(path)


def remove_bundles(data_dir: Path | str, names: Iterable[str]) -> list[tuple[str, str | None]]:
    """Delete bundles from a device's data directory, each only once proven Glimpse's own.

    A complete bundle (``bundles/NAME``) must be a bundle whose manifest names
    every file in it; an unfinished transfer (``bundles/.incoming/NAME``) may hold
    anything, since only ``push`` writes under ``.incoming``, but must be a real
    directory there. The bundle ``current`` points at is never removed, and
    symlinks are never followed.

    Args:
        data_dir: the device's data directory.
        names: ``NAME`` or ``.incoming/NAME`` relative to ``bundles/``.

    Returns:
        (name, ``None`` when removed or the reason it was left alone), in order.
    """
    bundles = Path(data_dir) / BUNDLES_DIR
    link = Path(data_dir) / CURRENT_LINK
    served = real(link) if os.path.lexists(link) else None
    outcome: list[tuple[str, str | None]] = []
    for name in names:
        parts = Path(name).parts
        incoming = len(parts) == 2 and parts[0] == INCOMING_DIR
        if not (len(parts) == 1 or incoming) or parts[-1] in (".", "..", INCOMING_DIR) or Path(name).is_absolute():
            outcome.append((name, f"{name!r} is not a bundle name under {bundles}"))
            continue
        path = bundles / name
        if not os.path.lexists(path):
            outcome.append((name, None))  # already gone: what was asked holds
            continue
        if path.is_symlink() or not path.is_dir():
            outcome.append((name, f"{path} is {describe(path)}, not a bundle directory; left alone"))
            continue
        if served is not None and real(path) == served:
            outcome.append((name, f"{path} is the bundle {link} points at; left alone"))
            continue
        try:
            if incoming:
                shutil.rmtree(path)
            else:
                remove_owned(path, ["bundle"], "a bundle")
        except OutputRefused as exc:
            outcome.append((name, str(exc)))
            continue
        except OSError as exc:
            outcome.append((name, f"cannot remove {path}: {exc.strerror}"))
            continue
        outcome.append((name, None))
    return outcome


def set_modes(root: Path | str, modes: Modes = SHARED) -> None:
    """Give every directory and file under ``root`` (and ``root``) ``modes``, whatever the umask.

    Symlinks are left alone (their own modes mean nothing on Linux).
    """
    root = Path(root)
    os.chmod(root, modes.directory)
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            child = os.path.join(directory, name)
            if not os.path.islink(child):
                os.chmod(child, modes.directory)
        for name in files:
            child = os.path.join(directory, name)
            if not os.path.islink(child):
                os.chmod(child, modes.file)


def unreadable(root: Path | str) -> str | None:
    """Why this process cannot read the tree at ``root``, or ``None`` if it can.

    Returns:
        e.g. ``"cannot read /var/lib/glimpse/bundles/b: owned by root, mode 0700;
        run: sudo chown -R glimpse: /var/lib/glimpse/bundles/b (or sudo chmod -R a+rX ...)"``
        for the first directory or file this process may not read, naming its
        owner, its mode and a command that fixes the whole tree (or, for a
        directory above ``root`` it may not enter, that directory alone).
    """
    root = Path(os.path.abspath(root))
    for parent in reversed(root.parents):  # from / down: the first one shut is the cause
        if not os.access(parent, os.X_OK):
            return _explain(parent, parent, recursive=False)
    if not os.path.lexists(root):
        return None
    if not os.access(root, os.R_OK | os.X_OK):
        return _explain(root, root)
    for directory, dirs, files in os.walk(root):
        checks = [(os.path.join(directory, d), os.R_OK | os.X_OK) for d in dirs]
        checks += [(os.path.join(directory, f), os.R_OK) for f in files]
        for path, need in checks:
            if not os.path.islink(path) and not os.access(path, need):
                return _explain(Path(path), root)
    return None


def _explain(path: Path, fix_root: Path, recursive: bool = True) -> str:
    import grp
    import pwd

    try:
        info = path.stat()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = str(os.geteuid())
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    if not recursive:
        return (f"cannot enter {path}: owned by {owner}, mode {stat.S_IMODE(info.st_mode):04o}, and this runs as "
                f"{me}; run: sudo chown {me}:{group} {fix_root} (or sudo chmod o+x {fix_root})")
    return (f"cannot read {path}: owned by {owner}, mode {stat.S_IMODE(info.st_mode):04o}, and this runs as {me}; "
            f"run: sudo chown -R {me}:{group} {fix_root} (or sudo chmod -R a+rX {fix_root})")

"""The one exception root of Glimpse and its subclasses.

Every error a user can cause derives from :class:`GlimpseError`, and also from
the matching built-in, so callers may catch either. :func:`run_command` is how
both command lines (``glimpse``, ``glimpse-provision``) turn any error into one
line (:func:`describe_error`), and :class:`CommandParser` how they report usage errors.
"""

import argparse
import errno
import sqlite3
import sys


class GlimpseError(Exception):
    """Root of every error Glimpse raises on purpose.

    Attributes:
        exit_status: what a command line exits with when this error ends it.
    """

    exit_status = 2


class BundleInvalid(GlimpseError, ValueError):
    """A bundle is missing, of the wrong version, altered, or inconsistent."""


class BundleNameInvalid(GlimpseError, ValueError):
    """A bundle name given to reload is not a plain directory name (empty, a path,
    hidden, too long, or with control characters): a bad request, not a bad bundle."""


class ModelInvalid(GlimpseError, ValueError):
    """A model directory or ``.tflite`` file cannot be used."""


class ModelUnsupported(GlimpseError, ValueError):
    """A model cannot be used for what was asked (e.g. exported for a runtime that cannot run it)."""


class QueryInvalid(GlimpseError, ValueError):
    """A search query is empty, too long, or not text."""


class ImageUnreadable(GlimpseError, ValueError):
    """A file is not an image Glimpse can read (corrupt, truncated, too large...).

    ``str()`` names the file; :attr:`reason` is the problem alone, for lists
    that show the file's name beside it.
    """

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class ItemNotFound(GlimpseError, KeyError):
    """No item with that id exists in the bundle."""

    def __str__(self):  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "item not found"


class RuntimeMissing(GlimpseError, ImportError):
    """No TFLite interpreter (ai-edge-litert or tflite-runtime) is installed."""


class HardwareInvalid(GlimpseError, ValueError):
    """A front-panel setting (pin, display, command) cannot be used as written."""


class PortInUse(GlimpseError, OSError):
    """The daemon's address is taken by another program."""


class OutputRefused(GlimpseError, ValueError):
    """An output cannot be written there: it is, holds or lies inside an input, or is not Glimpse's own to replace."""


class BundleUnreadable(BundleInvalid):
    """This process may not read a bundle's files (owner and mode); the message says how to fix it."""


class CameraUnavailable(GlimpseError, RuntimeError):
    """No camera is configured or found, or it could not take a photo."""


# ---------------------------------------------------------------------------
# How both command lines (``glimpse``, ``glimpse-provision``) parse and report errors.


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose subcommands report errors as the program does:
    ``PROG: error: ...`` (not ``PROG SUBCOMMAND: error:``), after the usage line,
    and whose subcommands' ``--help`` has a description line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog.split()[0]}: error: {message}\n")


class _Commands(argparse._SubParsersAction):
    """Subcommands whose ``--help`` opens with what they do: the one-line
    ``help`` of the command list, as a sentence, unless a description is given."""

    def add_parser(self, name, **kwargs):
        summary = kwargs.get("help")
        if summary and "description" not in kwargs:
            kwargs["description"] = summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else ".")
        return super().add_parser(name, **kwargs)


def _debug_output(args) -> None:
    """``--debug``: also show the native runtime's routine log lines."""
    if args.debug:
        from device import runtime

        runtime.show_native_log()


def run_command(prog: str, command, args) -> int:
    """Run one subcommand the way both command lines do.

    Any error ends as one line ``PROG: error: ...`` on stderr and a non-zero
    status (a traceback only with ``--debug``): a :class:`GlimpseError` says
    its own message and exits with its ``exit_status``; an ``OSError`` (a full
    disk, a file that cannot be read) names the file and the problem; a
    missing host-only library says what to install. Ctrl-C exits 130.
    """
    _debug_output(args)
    try:
        return command(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become messages
        if args.debug:
            raise
        message, status = describe_error(exc, args.command)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return status


#: Modules only the host extra installs (PyTorch and friends).
HOST_MODULES = {"torch", "torchvision", "litert_torch", "open_clip", "transformers", "safetensors",
                "google_crc32c", "ai_edge_torch", "tensorflow"}

_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on the disk; free some space and try again",
    errno.EDQUOT: "over the disk quota; free some space and try again",
    errno.EACCES: "permission denied; check the owner and mode (ls -l) or run as a user who may use it",
    errno.EPERM: "operation not permitted; check the owner and mode (ls -l)",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder, not a file",
}


def describe_error(exc: BaseException, command: str | None = None) -> tuple[str, int]:
    """The one-line message and exit status a command line shows for ``exc``."""
    if isinstance(exc, GlimpseError):
        return str(exc), exc.exit_status
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in HOST_MODULES:
        what = f"{command} needs" if command else "this needs"
        return (f"{what} the host tools ({exc.name} is missing): install Glimpse with the host extra "
                "(pip install -e '.[host]'), or run it from .venv-host", 2)
    if isinstance(exc, OSError):
        problem = _OS_PROBLEMS.get(exc.errno) or exc.strerror or str(exc)
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        where = " -> ".join(str(n) for n in names)
        return (f"{where}: {problem}" if where else problem), 2
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):  # SQLite says ENOSPC its own way
        return _OS_PROBLEMS[errno.ENOSPC], 2
    if isinstance(exc, sqlite3.Error):
        return f"database error: {exc}", 2
    if isinstance(exc, MemoryError):
        return "out of memory; close other programs or use a smaller input", 2
    return (f"unexpected {type(exc).__name__}: {exc} (a bug: run again with --debug and report "
            "the traceback)"), 1


# ---------------------------------------------------------------------------
# The host's errors (``glimpse-provision``), grouped by pipeline as gpiozero's
# exc.py groups by device kind: catch a base to handle a whole stage.


class HostToolsMissing(GlimpseError, ImportError):
    """A host command needs the ``host`` extra (PyTorch, litert-torch...) and it is not installed."""


class CacheInvalid(GlimpseError, ValueError):
    """The host's build cache cannot be used as it is (written by a newer Glimpse)."""


class BundleBuildError(GlimpseError):
    """Base of what stops ``glimpse-provision build`` from writing a bundle."""


class BuildFailed(BundleBuildError, RuntimeError):
    """The build could not produce a bundle (no photos, output in the way...)."""


class BuildInterrupted(BundleBuildError, RuntimeError):
    """Ctrl-C during a build; the cache keeps what was done."""

    exit_status = 130


class ModelBuildError(GlimpseError):
    """Base of what stops the host from making a model (import, training, their data)."""


class CaptionsInvalid(ModelBuildError, ValueError):
    """A captions file cannot be read: unknown form, bad JSON/CSV, missing keys."""


class CaptionImageUnknown(CaptionsInvalid):
    """A COCO annotation names an ``image_id`` that ``images`` does not list."""


class ModelSourceMissing(ModelBuildError, FileNotFoundError):
    """The checkpoint file or directory to import does not exist."""


class ModelSourceInvalid(ModelBuildError, ValueError):
    """The source is not a CLIP model this importer reads, or its files are corrupt."""


class ArchitectureUnknown(ModelBuildError, ValueError):
    """``--arch`` is missing or not an architecture open_clip defines."""


class ParityFailed(ModelBuildError, RuntimeError):
    """The converted towers or tokenizer do not reproduce the source model."""


class TrainInvalid(ModelBuildError, ValueError):
    """Training cannot start: bad options, no usable data, a checkpoint that does not fit."""


class TrainInterrupted(ModelBuildError, RuntimeError):
    """Ctrl-C during training; a checkpoint (or the feature cache) keeps what was done."""

    exit_status = 130


class DeployError(GlimpseError):
    """Base of what stops the host from getting Glimpse or a bundle onto devices."""


class TargetInvalid(DeployError, ValueError):
    """A wheelhouse target (platform, Python version, glibc) is not one Glimpse supports."""


class WheelhouseFailed(DeployError, RuntimeError):
    """pip could not build, download or resolve the wheelhouse (network, missing wheel...)."""


class DeviceUnreachable(DeployError, ConnectionError):
    """ssh cannot log in to the device (host down, wrong port, key refused...)."""


class ToolMissing(DeployError, FileNotFoundError):
    """``ssh`` or ``rsync`` is not installed on this host."""


class PushFailed(DeployError, RuntimeError):
    """A push step failed; the message names the step and what the rollback left serving."""


class DiskFull(PushFailed):
    """The device's data directory ran out of space during the transfer."""


class InstallFailed(DeployError, RuntimeError):
    """Setting the device up failed; the message names the step."""


class FleetFailed(DeployError, RuntimeError):
    """ansible-playbook is missing, or at least one device was not updated."""

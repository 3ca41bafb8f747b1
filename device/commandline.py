"""What both command lines (``glimpse``, ``glimpse-provision``) share: how they
parse arguments and how any error ends as one line.

:func:`run_command` runs a subcommand and turns any error into ``PROG: error: ...``
(:func:`describe_error`); :class:`CommandParser` reports usage errors the same way.
It lives apart from :mod:`device.errors`, which holds only the exceptions, and
from ``device.cli``, which the host's command line may not import.
"""

import argparse
import errno
import sqlite3
import sys

from device.errors import GlimpseError


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

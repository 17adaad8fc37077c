"""Files: inputs read once, outputs that never replace an input, checked before any work.

Inputs that are not regular files (``-`` for stdin, a FIFO, ``<(...)``) are copied once to a
temporary file, since the readers open a file several times (the header, then each pass);
messages name them as the user gave them (``<stdin>``, ``/dev/fd/63``), never the copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile

from ._command import CommandError, UsageError

#: What ``-`` as an input file is called in messages.
STDIN_NAME = "<stdin>"
#: The temporary folders of input copies: ``fastgd-input-<pid of the owner>-<random>``.
COPY_PREFIX = "fastgd-input-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, another user's
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended but is not yet reaped by its parent (Linux; a killed run
    whose shell waits on the rest of its pipeline): it will never clean up."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
    except OSError:  # no /proc (macOS), or it just went away
        return False
    return bool(fields) and fields[0] == b"Z"


def remove_stale_copies(root: str) -> list[str]:
    """Remove the copy folders in ``root`` left by runs that were killed before they could
    clean up (``kill -9``): this user's folders whose owner process is gone. Returns them.
    A reused pid only keeps a stale folder a little longer; never removes a live one."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate a process on Windows
        return []
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        owner = entry.name[len(COPY_PREFIX) :].split("-", 1)[0]
        if not entry.name.startswith(COPY_PREFIX) or not owner.isdigit():
            continue
        try:
            mine = entry.is_dir(follow_symlinks=False) and entry.stat().st_uid == os.getuid()
        except OSError:  # removed as we looked
            continue
        if mine and int(owner) != os.getpid() and not _process_alive(int(owner)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


class Session:
    """What one run of :func:`fastgd.cli.main` set up and removes at its end (error and
    Ctrl-C included): the temporary copies of inputs that are not regular files, and the
    names the user gave them."""

    def __init__(self) -> None:
        self.shown_names: dict[str, str] = {}
        self._folder: str | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def copy(self, stream, shown: str) -> str:
        """Copy ``stream`` (read once, to its end) to a regular file; return its path."""
        if self._folder is None:
            remove_stale_copies(tempfile.gettempdir())
            self._folder = tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-")
        path = os.path.join(self._folder, f"input-{len(self.shown_names) + 1}")
        self.shown_names[path] = shown
        with open(path, "wb") as handle:
            shutil.copyfileobj(stream, handle, 1 << 20)
        return path

    def shown(self, text: str) -> str:
        """``text`` with every temporary copy's path replaced by what the user gave."""
        for path, name in self.shown_names.items():
            text = text.replace(path, name)
        return text


def regular_input(session: Session, given: str) -> str:
    """A regular file holding the input ``given``: itself, or a copy of stdin (``-``), a
    FIFO or a process substitution (``<(zcat x.gz)``)."""
    if given == "-":
        return session.copy(sys.stdin.buffer, STDIN_NAME)
    try:
        mode = os.stat(given).st_mode
    except OSError:
        return given  # a missing file: the reader says so in its own words
    if stat.S_ISREG(mode):
        return given
    if stat.S_ISDIR(mode):
        raise CommandError(f"{given} is a directory, not a file.")
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        with open(given, "rb") as stream:
            return session.copy(stream, given)
    raise CommandError(f"{given} is not a regular file (nor a pipe); give a file.")


def _identity(path: str) -> tuple[int, int] | None:
    """The regular file an input or output names, as (device, inode), following links;
    stdin's file for ``-`` (a file redirected with ``< file``); None where there is none
    (yet) or it is not a regular file (``/dev/null`` as input and output replaces nothing)."""
    try:
        info = os.fstat(sys.stdin.fileno()) if path == "-" else os.stat(path)
    except (OSError, ValueError, AttributeError):  # missing, or no stdin at all
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def check_output(given: str, flag: str, inputs: list[str], creates_folders: bool) -> None:
    """Refuse, before any work, an output that is one of the inputs (also through a link or
    stdin's redirection: ``-o s.csv < s.csv``; a usage error), a directory, or in a
    directory that is missing (unless the command creates it) or not writable."""
    output = _identity(given)
    for source in inputs:
        if output is not None and _identity(source) == output:
            if source == "-":
                same = f" ({STDIN_NAME})"
            elif os.path.abspath(given) == os.path.abspath(source):
                same = ""
            else:
                same = f" ({source})"
            raise UsageError(
                f"{flag} {given} is the command's input{same}; writing there would replace "
                "it. Nothing was written; choose another output file."
            )
    if os.path.isdir(given):
        raise CommandError(f"{flag} {given} is a directory; give a file name.")
    folder = os.path.dirname(given) or "."
    while creates_folders and not os.path.exists(folder):
        folder = os.path.dirname(folder) or "."
    if not os.path.isdir(folder):
        raise CommandError(
            f"{flag} {given}: the directory {folder} does not exist; nothing was done."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(
            f"{flag} {given}: the directory {folder} is not writable; nothing was done."
        )


def prepare_files(args: argparse.Namespace, session: Session) -> None:
    """Check the command's outputs against its inputs (as given), then replace each input
    that is not a regular file by a temporary copy."""
    command = args._command
    given = [getattr(args, name) for name in command.inputs if getattr(args, name) is not None]
    if given.count("-") > 1:
        raise UsageError("only one input can be '-' (stdin).")
    for name, flag in command.outputs:
        output = getattr(args, name)
        if output is not None:
            inputs = [os.fspath(path) for path in given]
            check_output(os.fspath(output), flag, inputs, command.creates_folders)
    for name in command.inputs:
        value = getattr(args, name)
        if value is not None:
            setattr(args, name, regular_input(session, os.fspath(value)))


def shown_input(args: argparse.Namespace, name: str) -> str:
    """The input ``name`` as the user gave it (not its temporary copy)."""
    text = os.fspath(getattr(args, name))
    session = getattr(args, "_session", None)  # set by main()
    return text if session is None else session.shown(text)


def shown_inputs(args: argparse.Namespace) -> list[str]:
    """The command's inputs that were given, as the user gave them, the data last."""
    return [
        shown_input(args, name)
        for name in args._command.inputs
        if getattr(args, name, None) is not None
    ]


def is_temporary_copy(args: argparse.Namespace, name: str) -> bool:
    """Whether the input ``name`` is a temporary copy of stdin or a pipe."""
    session = getattr(args, "_session", None)
    return session is not None and getattr(args, name) in session.shown_names

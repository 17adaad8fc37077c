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
            self._folder = tempfile.mkdtemp(prefix="fastgd-input-")
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


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through symbolic or hard links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_output(given: str, flag: str, inputs: list[str], creates_folders: bool) -> None:
    """Refuse, before any work, an output that is one of the inputs, a directory, or in a
    directory that is missing (unless the command creates it) or not writable."""
    for source in inputs:
        if source != "-" and _same_file(given, source):
            same = "" if os.path.abspath(given) == os.path.abspath(source) else f" ({source})"
            raise CommandError(
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

"""Failures: one line each on stderr, the traceback only with ``--debug``; Ctrl-C (exit 130)
even where SIGINT was inherited as ignored; Python warnings as one line each. Both speak
the command line's language: an option the library's message spells as a Python keyword
(``on_bad_rows='skip'``) reads as the command's flag (``--on-bad-rows skip``)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shlex
import signal
import sys
import threading
import traceback
import warnings

from ._command import CommandError, UsageError
from ._paths import Session, shown_inputs

#: ``name=value`` in a message: a Python keyword with a quoted string, a list, or a bare
#: token as its value (not inside a quoted cell or a flag: ``'a=1'``, ``--x=1``).
_ASSIGNMENT = re.compile(
    r"(?<![\w.\-'\"])(?P<name>[A-Za-z_]\w*)="
    r"(?P<value>'[^']*'|\"[^\"]*\"|\[[^\]]*\]|[^\s,;:()\[\]]+)"
)
#: ``name > 0`` and the like: a keyword compared in a rule's message.
_COMPARISON = re.compile(r"(?<![\w.\-'\"])(?P<name>[A-Za-z_]\w*)(?= (?:[<>]=?|==|!=) )")
#: ``(--drop x, --drop x)``: the same flag twice once both spellings became flags.
_REPEATED = re.compile(r"\((?P<flag>--[\w-]+(?: [^,()]+)?), (?P=flag)\)")


def command_flags(parser) -> dict[str, str | dict[bool, str]]:
    """The command's flags by the keyword they set: ``{keyword: flag}`` for an option that
    takes a value (``max_iter``: ``--epochs``), ``{keyword: {True: flag, False: flag}}``
    for a switch (``standardize``: ``--standardize`` / ``--no-standardize``). Without a
    parser: the parameter table's flags."""
    if parser is None:
        from .. import parameters

        return {row.name: row.flag for row in parameters.cli_parameters()}
    flags: dict[str, str | dict[bool, str]] = {}
    for action in parser._actions:
        long = [option for option in action.option_strings if option.startswith("--")]
        if not long or action.dest == "help":
            continue
        if action.nargs != 0:
            flags.setdefault(action.dest, long[0])
            continue
        switch = flags.setdefault(action.dest, {})
        if not isinstance(switch, dict):
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            switch.setdefault(True, long[0])
            switch.setdefault(False, next(o for o in long if o.startswith("--no-")))
        elif isinstance(action.const, bool):  # store_true, store_false
            switch.setdefault(action.const, long[0])
    return flags


def _flag_value(value: str) -> str:
    """A Python value as the command line writes it (``'skip'``: ``skip``)."""
    if value[:1] in "'\"":
        return shlex.quote(value[1:-1])
    if value.startswith("["):
        items = [item.strip().strip("'\"") for item in value[1:-1].split(",")]
        return shlex.quote(",".join(item for item in items if item))
    value = value.rstrip(".")
    return "none" if value == "None" else value


def flag_spelling(message: str, parser=None) -> str:
    """``message`` with the options it names as Python keywords written as the command's
    flags: ``use on_bad_rows='skip'`` reads ``use --on-bad-rows skip``, ``max_iter=5``
    reads ``--epochs 5``, ``alpha > 0`` reads ``--alpha > 0``. Keywords the command has no
    flag for are left as they are."""
    flags = command_flags(parser)

    def assignment(match: re.Match) -> str:
        flag = flags.get(match["name"])
        if isinstance(flag, dict):  # a switch: standardize=False is --no-standardize
            value = {"True": True, "False": False}.get(match["value"])
            return flag.get(value, match[0]) if value is not None else match[0]
        return match[0] if flag is None else f"{flag} {_flag_value(match['value'])}"

    def comparison(match: re.Match) -> str:
        flag = flags.get(match["name"])
        return flag if isinstance(flag, str) else match[0]

    message = _ASSIGNMENT.sub(assignment, message)
    message = _COMPARISON.sub(comparison, message)
    return _REPEATED.sub(r"(\g<flag>)", message)


def _data_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean unreadable input (a damaged or truncated file), not a bug."""
    import bz2  # noqa: F401  (bz2 reports damage as OSError)
    import lzma
    import zipfile
    import zlib

    types: list[type[BaseException]] = [
        ValueError,
        TypeError,
        OSError,
        EOFError,
        zlib.error,
        lzma.LZMAError,
        zipfile.BadZipFile,
        csv.Error,
        UnicodeError,
    ]
    with contextlib.suppress(ImportError):
        import zstandard

        types.append(zstandard.ZstdError)
    return tuple(types)


def _data_error_message(error: BaseException, args, session: Session) -> str:
    """The error's message, naming the file it concerns when it does not already."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, (ValueError, OSError)):  # EOFError, zlib.error, csv.Error, ...
        kind = type(error)
        name = (
            kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        )
        what = "not readable as CSV" if isinstance(error, csv.Error) else "damaged or truncated"
        message = f"the file is {what} ({name.lstrip('_')}: {message})"
    message = session.shown(message)
    names = shown_inputs(args)
    # A bad option (ValueError, TypeError) concerns no file; damaged data often names none
    # (gzip's BadGzipFile, bz2's OSError, EOFError, zlib.error): the data file it is.
    concerns_a_file = not isinstance(error, (ValueError, TypeError)) or isinstance(
        error, UnicodeError
    )
    if concerns_a_file and names and not any(name in message for name in names):
        message = f"{names[-1]}: {message}"
    return message


def _silence_stdout() -> None:
    """The reader of stdout went away (``fastgd info m.npz | head``): stop quietly, as
    command-line tools do, without a second error when Python flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def report(error: BaseException, args, session: Session) -> int:
    """Print one line for ``error`` on stderr; return the exit status."""
    parser = getattr(args, "_parser", None)
    if isinstance(error, UsageError):
        message = flag_spelling(session.shown(str(error)), parser)
        print(f"fastgd: error: {message} (see '{args._parser.prog} --help')", file=sys.stderr)
        return 2
    if isinstance(error, KeyboardInterrupt):
        print("fastgd: interrupted.", file=sys.stderr)
        return 130
    if isinstance(error, BrokenPipeError):
        _silence_stdout()
        return 0
    if getattr(args, "debug", False):
        traceback.print_exception(error)
    if isinstance(error, (CommandError, ImportError)):  # ImportError: what to install
        message = f"fastgd: error: {flag_spelling(session.shown(str(error)), parser)}"
    elif isinstance(error, MemoryError):
        names = shown_inputs(args)
        message = (
            f"fastgd: error: out of memory{' reading ' + names[-1] if names else ''}; try a "
            "smaller --block-rows, --dtype float32, or fewer columns."
        )
    elif isinstance(error, _data_error_types()):
        # CsvError, DivergenceError, ModelFormatError, invalid options, missing files,
        # damaged compressed data: the message names the file (and line, column).
        message = (
            f"fastgd: error: {flag_spelling(_data_error_message(error, args, session), parser)}"
        )
    else:
        text = " ".join(session.shown(str(error)).split())
        message = (
            f"fastgd: internal error: {type(error).__name__}: {text} "
            "(run again with --debug for the traceback)"
        )
    print(message, file=sys.stderr)
    return 1


@contextlib.contextmanager
def interruptible():
    """Ctrl-C raises KeyboardInterrupt, even where SIGINT was inherited as ignored (a job
    started with ``&`` by a shell without job control) or reset to the default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    replace = previous in (signal.SIG_IGN, signal.SIG_DFL, None)
    if replace:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if replace:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def one_line_warnings(session: Session, parser=None):
    """Python warnings raised during a command, as ``fastgd: warning: <message>`` (in the
    flags of ``parser``'s command)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(flag_spelling(session.shown(str(message)), parser).split())
        print(f"fastgd: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield

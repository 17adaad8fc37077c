"""What every subcommand module shares: the :class:`Command` record and the two errors a
command raises (a data error, exit 1; a usage error found after parsing, exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


class CommandError(Exception):
    """A data or training error: reported on stderr, exit status 1."""


class UsageError(Exception):
    """A usage error found after parsing (exit status 2)."""


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure(parser)`` adds its arguments, ``run(args)`` returns the
    exit status."""

    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: the arguments (Namespace attributes) naming files the command reads, the data last
    inputs: tuple[str, ...] = ()
    #: ``(attribute, flag)`` of the files it writes; none may be one of its inputs
    outputs: tuple[tuple[str, str], ...] = ()
    #: whether the outputs' missing directories are created (else: an error before any work)
    creates_folders: bool = False

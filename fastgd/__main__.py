"""``python -m fastgd`` and the ``fastgd`` console script: the ``fastgd`` command (see
:mod:`fastgd.cli`).

:func:`main` takes over Ctrl-C before anything heavy is imported (numpy, Numba and polars
take about a second): a SIGINT during start-up stops the command with exit 130 and one line,
even in a job started with ``&`` (SIGINT inherited as ignored), instead of a traceback or
a run that goes on (issue 10). So this module and ``fastgd/__init__.py`` import nothing
heavy.
"""

from __future__ import annotations

import signal
import sys


def _take_over_ctrl_c() -> None:
    """Ctrl-C raises KeyboardInterrupt from now on, also where SIGINT was inherited as
    ignored or reset to the default action (only the main thread can set a handler)."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastgd`` command; return its exit status (130 after Ctrl-C, at any time)."""
    _take_over_ctrl_c()
    try:
        from .cli import main as run_command

        return run_command(argv)
    except KeyboardInterrupt:
        print("fastgd: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

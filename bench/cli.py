"""Shared plumbing for the command-line entry points: clean errors, exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .errors import BenchError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse already exits 2; keep it to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None,
            prog: str = "bench") -> int:
    """Run *main*; a :class:`BenchError` or an OS error (a missing or read-only directory, a full
    disk) becomes one line on stderr and exit code 2, Ctrl-C one line and exit code 130."""
    try:
        return main(argv)
    except BenchError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{prog}: error: {err.strerror or err}"
              + (f": {err.filename!r}" if getattr(err, "filename", None) else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"{prog}: interrupted" + (f"; {err}" if str(err) else ""), file=sys.stderr)
        return 130

"""Exception family of the harness.

Every error raised for bad input derives from :class:`BenchError`, and also from
the matching built-in (``ValueError``, ``TypeError``, ``FileNotFoundError``), so
callers can catch either. Command-line entry points turn a ``BenchError`` into
one line on stderr and exit code 2 (see :func:`bench.cli.run_cli`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Base class of every error the harness raises on purpose."""


class BenchValueError(BenchError, ValueError):
    """A value is out of range or inconsistent with another one."""


class BenchTypeError(BenchError, TypeError):
    """An argument has the wrong type or number of dimensions."""


class BenchKeyError(BenchError, KeyError):
    """A required key (in a file or a spec) is missing, or a name is unknown."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BenchFileError(BenchError, FileNotFoundError):
    """A file is missing or unreadable."""


class MethodUnavailableError(BenchError, RuntimeError):
    """A registered method cannot run here (missing framework or device)."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``" Did you mean ...?"`` suffix for an unknown *name* ('' if none is close)."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> BenchKeyError:
    """Build the error for an unknown *name* of *kind*, listing allowed names and near misses."""
    choices = sorted(choices)
    return BenchKeyError(
        f"unknown {kind} {name!r}; allowed: {', '.join(choices)}.{suggest(name, choices)}"
    )

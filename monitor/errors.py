"""How every entry point ends on an error: one line on stderr that names the file, field or
flag and the reason (credentials redacted), exit code 2 for bad input and 1 for anything
else, and a traceback only with `--debug`. Used by run_monitor.py (monitor/cli.py),
`python -m export` and the training entry points.

A leaf module (the standard library and monitor.redaction only), so that every part may use it.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from monitor.redaction import redact

DEBUG_FLAG = "--debug"
# Raised for input the user can fix: the project's ConfigError, BundleError, GeometryError,
# CredentialError, CheckpointError ... are ValueErrors; OSError is a file that cannot be read.
BAD_INPUT = (ValueError, OSError)


class ArgumentError(ValueError):
    """A bad option value, found by a command itself; the message names the option and the
    reason. Raised, not printed: `guarded` turns it into the one line (or, with --debug, the
    traceback and the line), exit code 2, as for every other bad input."""


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="on an error, show the full traceback (and debug log lines) instead of one line")


def wants_debug(argv) -> bool:
    return DEBUG_FLAG in (sys.argv[1:] if argv is None else argv)


def one_line(exc: BaseException, hint: bool = True) -> str:
    """The exception as one line: `FILE: reason` for an OSError, its message otherwise."""
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or exc.__class__.__name__
    text = " ".join(redact(text).split())
    if not isinstance(exc, BAD_INPUT):
        text = f"internal error: {exc.__class__.__name__}: {text}"
        if hint:
            text += f" (run again with {DEBUG_FLAG} for the traceback)"
    return text


def refuse(exc: BaseException, debug: bool = False, prefix: str = "") -> int:
    """Print a caught bad-input error as its one line (after the traceback with --debug) -> 2.
    For the errors a command catches because they are not ValueErrors (a store or socket that
    cannot be used); `prefix` says what failed ("event store: ")."""
    if debug:
        traceback.print_exception(exc)
    print(f"error: {prefix}{' '.join(redact(str(exc)).split())}", file=sys.stderr)
    return 2


def guarded(main, argv=None) -> int:
    """Run `main(argv)` -> exit code; an escaping exception becomes one line (with --debug,
    after its traceback), exit code 2 for bad input and 1 otherwise, Ctrl-C exit code 130."""
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        debug = wants_debug(argv)
        if debug:
            traceback.print_exception(exc)
        print(f"error: {one_line(exc, hint=not debug)}", file=sys.stderr)
        return 2 if isinstance(exc, BAD_INPUT) else 1

"""The `run_monitor.py` / `ssrl-monitor` command line: a subcommand per module of
monitor.commands, imported only when used so that each starts fast."""
from __future__ import annotations

import argparse
import importlib
import sys

from monitor.errors import DEBUG_FLAG, add_debug_flag, guarded
from pathlib import Path

# name -> module under monitor.commands; `run` is the default when no subcommand is given.
COMMANDS = {
    "run": "run",
    "score-features": "score_features",
    "subscribe": "subscribe",
    "broker": "broker",
    "dashboard": "dashboard",
    "events": "events",
    "replay": "replay",
    "mark": "mark",
    "keys": "keys",
    "calibrate": "calibrate",
    "bench": "bench",
    "health": "health",
    "metrics": "metrics",
}
DEFAULT = "run"


def _module(name: str):
    return importlib.import_module(f"monitor.commands.{COMMANDS[name]}")


def _available() -> dict[str, str]:
    out = {}
    for name in COMMANDS:
        try:
            out[name] = getattr(_module(name), "HELP", "")
        except ModuleNotFoundError:
            continue  # a command not built yet
    return out


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line naming it (not the whole usage), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def program_name() -> str:
    """What the user typed to start us: `run_monitor.py` from the checkout, `ssrl-monitor` as the
    installed console script, so that usage lines and hints name a command that exists."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("cli.py", "__main__.py", "-c") else "run_monitor.py"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(_main, argv)


def _main(argv: list[str]) -> int:
    debug = DEBUG_FLAG in argv  # global: before or after the command's name
    argv = [a for a in argv if a != DEBUG_FLAG]
    prog = program_name()
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: {prog} [COMMAND] [options]\n\ncommands:")
        for name, text in _available().items():
            print(f"  {name:16s}{text}")
        print(f"\nwith no command, '{DEFAULT}' runs. '{prog} COMMAND --help' for its options.\n"
              f"{DEBUG_FLAG}, with any command: on an error, the full traceback instead of one line.")
        return 0
    name = argv.pop(0) if argv and argv[0] in COMMANDS else DEFAULT
    try:
        module = _module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("monitor.commands"):
            print(f"error: command '{name}' is not available in this build", file=sys.stderr)
            return 2
        raise
    parser = OneLineParser(prog=f"{prog} {name}", description=getattr(module, "HELP", None))
    module.add_arguments(parser)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    args.debug = debug
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

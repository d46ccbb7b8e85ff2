"""The `run_monitor.py` / `ssrl-monitor` command line: a subcommand per module of
monitor.commands, imported only when used so that each starts fast."""
from __future__ import annotations

import argparse
import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: run_monitor.py [COMMAND] [options]\n\ncommands:")
        for name, text in _available().items():
            print(f"  {name:16s}{text}")
        print(f"\nwith no command, '{DEFAULT}' runs. 'run_monitor.py COMMAND --help' for its options.")
        return 0
    name = argv.pop(0) if argv and argv[0] in COMMANDS else DEFAULT
    try:
        module = _module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("monitor.commands"):
            print(f"error: command '{name}' is not available in this build", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"run_monitor.py {name}", description=getattr(module, "HELP", None))
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

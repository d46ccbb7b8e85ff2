"""One module per `run_monitor.py` subcommand; each has `HELP`, `add_arguments(parser)` and `run(args)`.

The wiring: may import every other monitor package."""

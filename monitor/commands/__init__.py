"""One module per `run_monitor.py` subcommand; each has `add_arguments(parser)` and `run(args)`."""

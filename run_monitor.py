#!/usr/bin/env python3
"""The command users run: `python run_monitor.py [COMMAND] ...` (see README.md)."""
import sys

from monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())

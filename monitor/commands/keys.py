"""run_monitor.py keys: CURVE key pairs for the monitor, the broker and their clients.

`keys --out DIR` makes a server pair and a client pair, and DIR/authorized/ holding the
client's public key: enough for one monitor and one subscriber on two machines.
`keys --out DIR --name NAME` (repeatable) makes just those pairs, for more clients or for a
broker and its monitors. Public key files (NAME.key) may be copied anywhere; a secret file
(NAME.key_secret, mode 0600) stays on the machine that uses it.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

HELP = "make CURVE key pairs (server, client) for encrypted, authenticated messages"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the key files (made if new)")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="make the pair NAME.key / NAME.key_secret; repeat for several "
                        "(default: server and client, plus DIR/authorized/client.key)")


def run(args: argparse.Namespace) -> int:
    from monitor.errors import ArgumentError
    from monitor.messages.keys import generate

    names = args.name or ["server", "client"]
    authorized = args.out / "authorized"
    if not args.name and (authorized / "client.key").exists():
        raise ArgumentError(f"{authorized / 'client.key'}: already exists; keys are never overwritten")
    try:
        made = generate(args.out, names)  # a CurveError (a ValueError) escapes to guarded: one line, exit 2
    except OSError as exc:
        raise ArgumentError(f"--out {args.out}: {exc.strerror or exc}") from exc
    for public, secret in made:
        print(f"{public.stem}: public key {public}, secret key {secret} (mode 0600; keep it on its machine)")
    if not args.name:
        authorized.mkdir(mode=0o755, exist_ok=True)
        shutil.copy(args.out / "client.key", authorized / "client.key")
        server, client = args.out / "server", args.out / "client"
        print(f"authorized subscribers: {authorized}/ (copy more NAME.key files there to let others in)")
        print(f"\nmonitor:    run_monitor.py --publish tcp://0.0.0.0:5556 --curve-key {server}.key_secret "
              f"--curve-authorized {authorized}")
        print(f"subscriber: run_monitor.py subscribe tcp://HOST:5556 --curve-key {client}.key_secret "
              f"--curve-server-key {server}.key")
    return 0

"""What the commands that publish alerts (run, replay) share: the CURVE flags, and --publish,
--connect and those flags laid over a configuration's [publish] and [security], checked by the
configuration's own rules so that a bad value names its flag. Not a command itself (cli.COMMANDS
does not name it)."""
from __future__ import annotations

import argparse

CURVE_FLAGS = ("curve_key", "curve_authorized", "curve_server_key")


def add_curve_arguments(p: argparse.ArgumentParser, who: str = "this monitor's") -> None:
    p.add_argument("--curve-key", metavar="FILE",
                   help=f"CURVE: {who} key pair (NAME.key_secret from 'keys', or env:VAR); see [security]")
    p.add_argument("--curve-authorized", metavar="DIR",
                   help="CURVE, binding: directory of the public keys (NAME.key) of the subscribers let in")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="CURVE, --connect: the broker's public key file (or env:VAR)")


def apply_publish_flags(config, args: argparse.Namespace) -> None:
    """--publish / --connect and the CURVE flags over `config`; ConfigError names the flag."""
    from monitor import config as cfgmod

    if args.publish and args.connect:
        raise cfgmod.ConfigError("--publish and --connect: give one (bind an endpoint, or connect to a broker)")
    for flag, value, connect in (("--publish", args.publish, False), ("--connect", args.connect, True)):
        if value:
            config.publish.endpoint, config.publish.connect = value, connect
            config.origins["publish.endpoint"] = flag
            cfgmod.check_endpoint(config)
    for key in CURVE_FLAGS:
        if getattr(args, key):
            setattr(config.security, key, getattr(args, key))
            config.origins[f"security.{key}"] = "--" + key.replace("_", "-")

"""The ``fairdarts`` command (also ``python -m fairdarts_core``).

Each sub-command is a pair of functions: ``add_<name>(subparsers)`` declares its arguments and
``run_<name>(args) -> int`` does the work. Human-readable output by default, one JSON object with
``--json``. Bad input (a ``ValueError``, a missing file) ends with a one-line error on stderr and
exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional

COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {}


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    print(json.dumps(payload) if getattr(args, "json", False) else text)


def _command(subparsers, name: str, help: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help, description=help)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    COMMANDS[name] = run
    return p


# --- sub-commands ------------------------------------------------------------------------------------
# (each module's command is added below by its own add_* function)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairdarts", description="Fair DARTS, hands-on: search, parse, "
                                     "retrain and inspect differentiable architecture search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


ADDERS: List[Callable] = []
"""Functions ``add(subparsers)``, one per sub-command, in the order ``--help`` lists them."""


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args) or 0
    except (UserError, ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"fairdarts {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fairdarts {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

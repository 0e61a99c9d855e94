"""The `lrorder` command: one module per verb over the recipe registry and run records, and the
verbs the settings declare (`lrorder.<setting>.verbs`). Building the parser imports no setting
code beyond those declarations; each verb imports what it needs when it runs.

Examples:
  lrorder list
  lrorder show convex-claim1 --profile full
  lrorder run convex-claim1 --seeds 3 --set eps=0.01 --out runs/claim1
  lrorder run --from runs/claim1 --seeds 10:20 --out runs/claim1-more
  lrorder report runs/claim1 runs/claim1-eps
  lrorder sweep convex-claim1 --grid steps=1,4,16 --grid n=3,5 --seeds 2 --out runs/sweep
  lrorder data where
  lrorder bench train-step
  lrorder selftest --quick
  lrorder reproduce

`lrorder VERB --help` documents a verb, with examples.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading

from lrorder.cli import listing, report, reproduce, run, settings, show, sweep
from lrorder.cli.options import Parser
from lrorder.core.errors import UserError

VERBS = (listing, show, run, report, sweep, reproduce, settings)  # each adds its sub-parser(s)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lrorder", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for verb in VERBS:
        verb.add(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.command = "lrorder " + shlex.join(argv)
        args.continue_with = None
        with _terminate_interrupts():
            return args.func(args) or 0
    except UserError as exc:
        print(f"lrorder: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = f"; continue with: {args.continue_with}" if args and args.continue_with else ""
        print(f"lrorder: interrupted{hint}", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _terminate_interrupts():
    """SIGTERM (a job's time limit: `timeout`, a cluster scheduler) stops a command as Ctrl-C
    does: the resume point is kept whole, exit status 130. Only the main thread sets handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

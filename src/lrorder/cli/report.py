"""`lrorder report DIR...`: re-render run and sweep reports from their records, compare runs,
export runs to TensorBoard, and combine runs of a recipe's methods or seeds run apart into one run."""

from __future__ import annotations

import argparse
from pathlib import Path

from lrorder.cli.options import add_verb
from lrorder.core.errors import UserError


def add(verbs: argparse._SubParsersAction) -> None:
    rerender = add_verb(verbs, "report", "re-render reports from stored records; compare or combine runs",
                        "lrorder report runs/claim1 runs/claim1-eps --out compare.md\n"
                        "lrorder report --combine runs/patch runs/patch-large runs/patch-small "
                        "runs/patch-small_noise\n"
                        "lrorder report runs/sweep --metric test_loss_ratio\n"
                        "lrorder report --tensorboard runs/claim1   # then: tensorboard --logdir runs/claim1")
    rerender.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    rerender.add_argument("--out", help="also write the comparison table to this file")
    rerender.add_argument("--combine", metavar="OUT",
                          help="write the run directory OUT combined from the runs DIR of one recipe, "
                               "profile and config, each with other methods (`--set methods=...`) "
                               "or seeds (`--seeds 3:6`), every seed of every method in one of them: "
                               "the recipe's report over all of them, every metric computed again "
                               "from their records")
    rerender.add_argument("--metric", action="append", default=[],
                          help="for a sweep: draw this metric's phase diagram (repeatable; "
                               "default: the metrics the paper states)")
    rerender.add_argument("--tensorboard", action="store_true",
                          help="also write each run's metrics.jsonl as TensorBoard event files in "
                               "RUN/tensorboard/, for a sweep in each of its runs (needs pip "
                               "install 'lrorder[tensorboard]')")
    rerender.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from lrorder.core import report, rundir, sweep, sweep_report
    from lrorder.core import tensorboard as board

    if args.tensorboard:
        board.require()
    if args.combine:
        _combine(args)
        return
    for path in map(Path, args.dirs):
        if sweep.is_sweep(path):
            sweep_report.render(path, args.metric)
            print(f"rendered {path / 'report.md'} and {path / 'table.csv'}")
            if args.tensorboard:  # every run of the sweep: `tensorboard --logdir DIR` shows them all
                for config in sorted((path / "runs").glob(f"*/{rundir.CONFIG}")):
                    print(f"wrote {board.export(config.parent)}")
        else:
            report.render(path)
            print(f"rendered {path / rundir.REPORT}")
            if args.tensorboard:
                print(f"wrote {board.export(path)}")
    if len(args.dirs) > 1 or args.out:  # --out of one run writes its table alone
        table = report.compare([Path(p) for p in args.dirs])
        if args.out:
            try:
                rundir.write_text(Path(args.out), table)
            except OSError as exc:
                raise UserError(f"cannot write {args.out} ({exc.strerror}): choose another --out") from None
        print(table)


def _combine(args: argparse.Namespace) -> None:
    from lrorder.core import tensorboard as board
    from lrorder.core.combine import combine
    from lrorder.core.runner import print_summary

    if args.out:
        raise UserError("--combine writes a run directory, not a comparison table: drop --out "
                        "(compare runs with `lrorder report DIR DIR --out FILE`)")
    out = Path(args.combine)
    print_summary(combine([Path(p) for p in args.dirs], out, args.command), out)
    if args.tensorboard:
        print(f"wrote {board.export(out)}")

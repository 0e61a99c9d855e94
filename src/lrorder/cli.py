"""The `lrorder` command: one thin function per verb over the recipe registry and run records.

Examples:
  lrorder list
  lrorder show convex-claim1 --profile full
  lrorder run convex-claim1 --seeds 3 --set eps=0.01 --out runs/claim1
  lrorder report runs/claim1 runs/claim1-eps
  lrorder sweep convex-claim1 --grid steps=1,4,16 --grid n=3,5 --seeds 2 --out runs/sweep
  lrorder data where
  lrorder bench train-step
  lrorder reproduce
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lrorder.core import config as cfg
from lrorder.core import report, rundir, sweep, sweep_report
from lrorder.core.errors import UserError
from lrorder.core.recipe import all_recipes, get_recipe, profile_values
from lrorder.core.runner import default_out, print_summary, run_recipe, timestamp
from lrorder.vision import bench as vision_bench
from lrorder.vision import data as vision_data


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line, like every other user error."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def cmd_list(args: argparse.Namespace) -> None:
    rows = [("recipe", "quick", "full", "seeds", "description")]
    rows += [(r.name, r.cost.get("quick", "?"), r.cost.get("full", "?"), str(r.default_seeds),
              r.description) for r in all_recipes().values()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])


def cmd_show(args: argparse.Namespace) -> None:
    recipe = get_recipe(args.recipe)
    config = cfg.resolve(recipe.Config, profile_values(recipe, args.profile),
                         cfg.split_assignments(args.set))
    print(f"{recipe.name} ({args.profile} profile, {recipe.default_seeds} seed(s) by default): "
          f"{recipe.description}\n{recipe.reference}\n")
    for info in cfg.describe(recipe.Config):
        value = cfg.as_dict(config)[info.name]
        paper = f" [paper: {info.paper}]" if info.paper is not None else ""
        print(f"  {info.name} = {report.fmt_setting(value)}{paper}\n      {info.doc}")
    claims = recipe.paper(config)
    if claims:
        print("\npaper's numbers:")
        for name, claim in claims.items():
            print(f"  {name} {claim.relation} {report.fmt(claim.value)} ({claim.source})")


def cmd_run(args: argparse.Namespace) -> None:
    recipe = get_recipe(args.recipe)
    out = Path(args.out) if args.out else default_out(recipe, args.profile or "quick")
    args.continue_with = f"lrorder run {recipe.name} --out {out} --resume"
    summary = run_recipe(recipe, out, profile=args.profile, sets=args.set, seed=args.seed,
                         seeds=args.seeds, device=args.device, resume=args.resume,
                         command=args.command)
    print_summary(summary, out)


def cmd_report(args: argparse.Namespace) -> None:
    for path in map(Path, args.dirs):
        if sweep.is_sweep(path):
            sweep_report.render(path, args.metric)
            print(f"rendered {path / 'report.md'} and {path / 'table.csv'}")
        else:
            report.render(path)
            print(f"rendered {path / rundir.REPORT}")
    if len(args.dirs) > 1:
        table = report.compare([Path(p) for p in args.dirs])
        if args.out:
            try:
                rundir.write_text(Path(args.out), table)
            except OSError as exc:
                raise UserError(f"cannot write {args.out} ({exc.strerror}): choose another --out") from None
        print(table)


def cmd_reproduce(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{args.profile}-{timestamp()}"
    if rundir.is_busy(out) and not args.resume:
        raise UserError(f"{out} exists and is not empty: pass --resume to continue it, "
                        "or choose another --out")
    args.continue_with = f"lrorder reproduce --profile {args.profile} --out {out} --resume"
    entries = []
    for name, recipe in all_recipes().items():
        config = cfg.resolve(recipe.Config, profile_values(recipe, args.profile))
        missing = recipe.missing_data(config)
        if missing:
            print(f"skipping {name}: {missing}", file=sys.stderr)
            entries.append((name, None, missing))
            continue
        print(f"== {name} ({args.profile})", flush=True)
        summary = run_recipe(recipe, out / name, profile=args.profile, device=args.device,
                             resume=args.resume and (out / name).exists(),
                             command=f"lrorder run {name} --profile {args.profile} --out {out / name}")
        print_summary(summary, out / name)
        entries.append((name, out / name, ""))
    report.index(out, entries, args.profile)
    print(f"\nindex: {out / 'index.md'}")


def cmd_sweep(args: argparse.Namespace) -> int:
    args.continue_with = "the same command (complete runs are kept)"
    result = sweep.sweep(args.recipe, args.grid, out=Path(args.out), sets=args.set,
                         profile=args.profile, seeds=args.seeds, backend=args.backend,
                         address=args.address, max_parallel=args.max_parallel,
                         gpus_per_run=args.gpus_per_run, device=args.device,
                         command=args.command)
    sweep_report.render(Path(args.out))
    counts: dict[str, int] = {}
    for entry in result["status"].values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; report: {Path(args.out) / 'report.md'}")
    if counts.get("failed"):
        print(f"failed runs are listed with their error in {Path(args.out) / sweep.SWEEP}",
              file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lrorder", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    verbs.add_parser("list", help="every recipe with its cost").set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="a recipe's resolved config, documented")
    show.add_argument("recipe")
    show.add_argument("--profile", default="quick")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(func=cmd_show)

    run = verbs.add_parser("run", help="run a recipe into a run directory")
    run.add_argument("recipe")
    run.add_argument("--profile", help="quick (laptop CPU, the default) or full (paper size)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key (repeatable); see `lrorder show RECIPE`")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="run this one seed")
    seeds.add_argument("--seeds", type=int, help="run seeds 0..N-1")
    run.add_argument("--out", help="run directory (default runs/RECIPE-PROFILE-TIME)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto")
    run.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    run.set_defaults(func=cmd_run)

    rerender = verbs.add_parser("report", help="re-render reports from stored records; compare runs")
    rerender.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    rerender.add_argument("--out", help="also write the comparison table to this file")
    rerender.add_argument("--metric", action="append", default=[],
                          help="for a sweep: draw this metric's phase diagram (repeatable; "
                               "default: the metrics the paper states)")
    rerender.set_defaults(func=cmd_report)

    swp = verbs.add_parser("sweep", help="a grid of config values x seeds, locally or on Ray")
    swp.add_argument("recipe")
    swp.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2|log:LO:HI:N",
                     help="values of one config key (repeatable: the sweep is the cross product)")
    swp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    swp.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 at every point")
    swp.add_argument("--profile", default="quick")
    swp.add_argument("--backend", choices=("local", "ray"), default="local")
    swp.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    swp.add_argument("--max-parallel", type=int, help="runs at once (default: CPU count)")
    swp.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each Ray task asks for")
    swp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    swp.add_argument("--out", required=True, help="sweep directory (re-run to resume)")
    swp.set_defaults(func=cmd_sweep)

    fetch = verbs.add_parser("data", help="where the data sets are; download or check one")
    vision_data.add_arguments(fetch)
    fetch.set_defaults(func=vision_data.command)

    bench = verbs.add_parser("bench", help="speed benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    train_step = benches.add_parser("train-step", help="WideResNet training step: plain vs trainer path")
    vision_bench.add_arguments(train_step)
    train_step.set_defaults(func=vision_bench.command)

    everything = verbs.add_parser("reproduce", help="run every recipe whose data is here; one index")
    everything.add_argument("--profile", default="quick")
    everything.add_argument("--out", help="directory of all runs (default runs/reproduce-PROFILE-TIME)")
    everything.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    everything.add_argument("--resume", action="store_true", help="continue a killed reproduce in --out")
    everything.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.command = "lrorder " + shlex.join(argv)
        args.continue_with = None
        return args.func(args) or 0
    except UserError as exc:
        print(f"lrorder: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = f"; continue with: {args.continue_with}" if args and args.continue_with else ""
        print(f"lrorder: interrupted{hint}", file=sys.stderr)
        return 130

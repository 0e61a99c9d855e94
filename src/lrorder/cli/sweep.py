"""`lrorder sweep`: a grid of config values x seeds, each point a normal run directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lrorder.cli.options import (
    add_data_dir,
    add_device,
    add_seeds,
    add_sets,
    add_verb,
    chosen_seeds,
    with_data_dir,
)


def add(verbs: argparse._SubParsersAction) -> None:
    swp = add_verb(verbs, "sweep", "a grid of config values x seeds, locally or on Ray",
                   "lrorder sweep convex-claim1 --grid steps=1,4,16 --grid n=3,5 --seeds 2 --out runs/sweep\n"
                   "lrorder sweep convex-lemma2 --grid gap=log:0.1:10:5 --backend ray --out runs/lemma2")
    swp.add_argument("recipe")
    swp.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2|log:LO:HI:N",
                     help="values of one config key (repeatable: the sweep is the cross product)")
    add_sets(swp)
    add_seeds(swp, one_seed=False, default="1")
    swp.add_argument("--profile", default="quick")
    swp.add_argument("--backend", choices=("local", "ray"), default="local")
    swp.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    swp.add_argument("--max-parallel", type=int, help="runs at once (default: CPU count)")
    swp.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each Ray task asks for")
    add_device(swp, default="auto")
    add_data_dir(swp)
    swp.add_argument("--out", required=True, help="sweep directory (re-run to resume)")
    swp.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from lrorder.core import sweep, sweep_report
    from lrorder.core.recipe import get_recipe

    args.continue_with = "the same command (complete runs are kept)"
    result = sweep.sweep(args.recipe, args.grid, out=Path(args.out),
                         sets=with_data_dir(get_recipe(args.recipe), args.set, args.data_dir),
                         profile=args.profile, seeds=chosen_seeds(args),
                         backend=args.backend, address=args.address, max_parallel=args.max_parallel,
                         gpus_per_run=args.gpus_per_run, device=args.device, command=args.command)
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

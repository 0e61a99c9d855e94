"""`lrorder reproduce`: every recipe whose data is on the machine, one index of their reports."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lrorder.cli.options import add_data_dir, add_device, add_verb, with_data_dir
from lrorder.core.errors import UserError
from lrorder.core.recipe import all_recipes


def add(verbs: argparse._SubParsersAction) -> None:
    everything = add_verb(verbs, "reproduce", "run every recipe whose data is here; one index",
                          "lrorder reproduce\n"
                          "lrorder reproduce --profile full --device cuda --data-dir /scratch/data")
    everything.add_argument("--profile", default="quick")
    everything.add_argument("--out", help="directory of all runs (default runs/reproduce-PROFILE-TIME)")
    add_device(everything, default="auto")
    add_data_dir(everything)
    everything.add_argument("--resume", action="store_true", help="continue a killed reproduce in --out")
    everything.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from lrorder.core import config as cfg
    from lrorder.core import report, rundir
    from lrorder.core.recipe import profile_values
    from lrorder.core.runner import print_summary, resolve_device, run_recipe, timestamp

    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{args.profile}-{timestamp()}"
    if rundir.is_busy(out) and not args.resume:
        raise UserError(f"{out} exists and is not empty: pass --resume to continue it, "
                        "or choose another --out")
    recipes = all_recipes()
    if any(recipe.uses_torch for recipe in recipes.values()):
        resolve_device(args.device)  # a device that is not here fails before the first recipe runs
    configs = {name: (sets := with_data_dir(recipe, (), args.data_dir),
                      cfg.resolve(recipe.Config, profile_values(recipe, args.profile),
                                  cfg.split_assignments(sets)))
               for name, recipe in recipes.items()}  # every profile checked before anything runs
    args.continue_with = f"lrorder reproduce --profile {args.profile} --out {out} --resume"
    entries, seconds = [], {}
    for name, recipe in recipes.items():
        sets, config = configs[name]
        start = time.perf_counter()
        try:
            skipped = recipe.missing_data(config)  # downloads what can be downloaded
            if not skipped:
                print(f"== {name} ({args.profile})", flush=True)
                given = "".join(f" --set {s}" for s in sets)
                summary = run_recipe(recipe, out / name, profile=args.profile, sets=sets,
                                     device=args.device, resume=args.resume and (out / name).exists(),
                                     command=f"lrorder run {name} --profile {args.profile}{given} "
                                             f"--out {out / name}")
        except UserError as exc:  # e.g. a data set found corrupt while loading: skip this recipe only
            skipped = str(exc)
        seconds[name] = time.perf_counter() - start
        if skipped:
            print(f"skipping {name}: {skipped}", file=sys.stderr)
            entries.append((name, None, skipped))
            continue
        print_summary(summary, out / name)
        entries.append((name, out / name, ""))
    report.index(out, entries, args.profile)
    print(f"\nindex: {out / 'index.md'}\nwall time per recipe:")
    for name, path, _ in entries:
        print(f"  {name:<22} {seconds[name]:7.1f} s{'' if path else '  (skipped)'}")
    print(f"  {'total':<22} {sum(seconds.values()):7.1f} s")

"""`lrorder reproduce`: every recipe whose data is on the machine, one index of their reports."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
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
    everything.add_argument("--jobs", type=int,
                            help="recipes run at once, each in its own process with its share of the "
                                 "cores, its output in OUT/RECIPE.log (default: one per core on the "
                                 "CPU, 1 with CUDA; 1 runs them in this process)")
    everything.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from lrorder.core import config as cfg
    from lrorder.core import report, rundir
    from lrorder.core.recipe import profile_values
    from lrorder.core.runner import print_summary, resolve_device, timestamp

    start = time.perf_counter()
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{args.profile}-{timestamp()}"
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be >= 1 (got {args.jobs})")
    if rundir.is_busy(out) and not args.resume:
        raise UserError(f"{out} exists and is not empty: pass --resume to continue it, "
                        "or choose another --out")
    recipes = all_recipes()
    device = "cpu"
    if any(recipe.uses_torch for recipe in recipes.values()):
        device = resolve_device(args.device)  # a device that is not here fails before anything runs
    configs = {name: (sets := with_data_dir(recipe, (), args.data_dir),
                      cfg.resolve(recipe.Config, profile_values(recipe, args.profile),
                                  cfg.split_assignments(sets)))
               for name, recipe in recipes.items()}  # every profile checked before anything runs
    args.continue_with = f"lrorder reproduce --profile {args.profile} --out {out} --resume"
    skipped: dict[str, str] = {}
    for name, recipe in recipes.items():  # one at a time: downloads what can be downloaded
        reason = recipe.missing_data(configs[name][1])
        if reason:
            skipped[name] = reason
            print(f"skipping {name}: {reason}", file=sys.stderr)
    jobs = [(name, out / name, args.profile, configs[name][0], args.device, args.resume)
            for name in sorted(recipes, key=lambda name: -_seconds(recipes[name], args.profile))
            if name not in skipped]  # the longest first: the cores stay busy to the end
    outcomes = {}
    parallel = args.jobs or (1 if device != "cpu" else max(1, min(os.cpu_count() or 1, len(jobs))))
    for name, summary, seconds in _run_all(jobs, parallel):
        outcomes[name] = seconds
        if isinstance(summary, str):  # e.g. a data set found corrupt while loading: this recipe only
            skipped[name] = summary
            print(f"skipping {name}: {summary}", file=sys.stderr)
        else:
            print(f"== {name} ({args.profile}), {seconds:.1f} s", flush=True)
            print_summary(summary, out / name)
    report.index(out, [(name, None, skipped[name]) if name in skipped else (name, out / name, "")
                       for name in recipes], args.profile)
    print(f"\nindex: {out / 'index.md'}\nwall time per recipe:")
    for name in recipes:
        taken = f"{outcomes[name]:7.1f} s" if name in outcomes else "      -  "
        print(f"  {name:<22} {taken}{'  (skipped)' if name in skipped else ''}")
    print(f"  {'total':<22} {time.perf_counter() - start:7.1f} s wall")


def _seconds(recipe, profile: str) -> float:
    """The recipe's stated cost of `profile`; unknown counts as the longest."""
    cost = recipe.cost.get(profile)
    return cost.seconds if cost is not None else math.inf


def _run_all(jobs: list[tuple], parallel: int):
    """Yield (recipe, summary or the one-line reason it could not run, seconds) as each finishes:
    in this process one by one, or in `parallel` worker processes that die with this one."""
    if parallel == 1:
        yield from map(_run_one, jobs)
        return
    import concurrent.futures

    from lrorder.core import workers

    with workers.pool(parallel, threads=max(1, (os.cpu_count() or 1) // parallel)) as pool:
        futures = [pool.submit(_run_one, job, True) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _run_one(job: tuple, quiet: bool = False) -> tuple[str, dict | str, float]:
    """One recipe into its run directory; a worker's own output goes to RUN_DIR.log."""
    from lrorder.core.recipe import get_recipe
    from lrorder.core.runner import run_recipe

    name, path, profile, sets, device, resume = job
    given = "".join(f" --set {s}" for s in sets)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if quiet:
            path.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(path.with_name(f"{name}.log").open("a"))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        try:
            summary = run_recipe(get_recipe(name), path, profile=profile, sets=sets, device=device,
                                 resume=resume and path.exists(),
                                 command=f"lrorder run {name} --profile {profile}{given} --out {path}")
        except UserError as exc:
            summary = str(exc)
    return name, summary, time.perf_counter() - start

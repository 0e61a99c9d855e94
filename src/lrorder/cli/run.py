"""`lrorder run`: one recipe into a run directory, or a stored run again (`--from DIR`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lrorder.cli.options import (
    add_data_dir,
    add_device,
    add_seeds,
    add_sets,
    add_verb,
    chosen_seeds,
    with_data_dir,
)
from lrorder.core.errors import UserError


def add(verbs: argparse._SubParsersAction) -> None:
    run = add_verb(verbs, "run", "run a recipe into a run directory",
                   "lrorder run convex-claim1 --seeds 3 --set eps=0.01 --out runs/claim1\n"
                   "lrorder run convex-claim1 --out runs/claim1 --resume\n"
                   "lrorder run cifar-patch --seeds 10:20 --data-dir /scratch/data --tensorboard\n"
                   "lrorder run --from runs/claim1 --set eps=0.1 --out runs/claim1-eps")
    run.add_argument("recipe", nargs="?", help="the recipe (`lrorder list`); not needed with --from")
    run.add_argument("--from", dest="source", metavar="DIR",
                     help="run the run in DIR again: its recipe, profile, resolved config, seeds and "
                          "device, with --set, --seed(s), --device and --data-dir on top")
    run.add_argument("--profile", help="quick (laptop CPU, the default) or full (paper size)")
    add_sets(run)
    add_seeds(run, one_seed=True)
    run.add_argument("--out", help="run directory (default runs/RECIPE-PROFILE-TIME)")
    add_device(run, default=None)
    run.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    add_data_dir(run)
    run.add_argument("--tensorboard", action="store_true",
                     help="also log every record to OUT/tensorboard/ as it is written "
                          "(needs pip install 'lrorder[tensorboard]')")
    run.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from lrorder.core import tensorboard
    from lrorder.core.recipe import get_recipe
    from lrorder.core.runner import default_out, print_summary, run_recipe

    if args.tensorboard:
        tensorboard.require()
    seeds, values = chosen_seeds(args), None
    if args.source:
        recipe, profile, values, stored_seeds, stored_device = _stored_run(args)
        seeds, device = seeds or stored_seeds, args.device or stored_device
    elif args.recipe:
        recipe, profile, device = get_recipe(args.recipe), args.profile, args.device
    else:
        raise UserError("run needs a RECIPE (see `lrorder list`) or --from DIR (a run to run again)")
    out = Path(args.out) if args.out else default_out(recipe, profile or "quick")
    args.continue_with = f"lrorder run {recipe.name} --out {out} --resume"
    summary = run_recipe(recipe, out, profile=profile, values=values,
                         sets=with_data_dir(recipe, args.set, args.data_dir), seeds=seeds, device=device,
                         resume=args.resume, command=args.command, tensorboard=args.tensorboard)
    print_summary(summary, out)


def _stored_run(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any], list[int], str]:
    """The recipe, profile, resolved config, seeds and device of the run in `args.source`."""
    from lrorder.core.recipe import get_recipe
    from lrorder.core.rundir import Records

    for flag, given in (("--profile", args.profile), ("--resume", args.resume)):
        if given:
            raise UserError(f"--from runs a stored run again as it was: drop {flag} (to continue a "
                            "killed run use `lrorder run RECIPE --out DIR --resume`)")
    stored = Records(Path(args.source)).config
    if args.recipe and args.recipe != stored["recipe"]:
        raise UserError(f"{args.source} holds a {stored['recipe']} run, not {args.recipe}: "
                        "drop the recipe (--from names it)")
    return (get_recipe(stored["recipe"]), stored["profile"], stored["config"], stored["seeds"],
            stored["device"])

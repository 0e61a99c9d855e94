"""`lrorder show RECIPE`: the resolved config, every key documented, and the paper's numbers."""

from __future__ import annotations

import argparse

from lrorder.cli.options import add_sets, add_verb


def add(verbs: argparse._SubParsersAction) -> None:
    show = add_verb(verbs, "show", "a recipe's resolved config, documented",
                    "lrorder show convex-claim1 --profile full\n"
                    "lrorder show cifar-patch --set epochs=30")
    show.add_argument("recipe")
    show.add_argument("--profile", default="quick", help="quick (the default) or full")
    add_sets(show)
    show.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from lrorder.core import config as cfg
    from lrorder.core.recipe import get_recipe, profile_values
    from lrorder.core.report import fmt, fmt_setting

    recipe = get_recipe(args.recipe)
    config = cfg.resolve(recipe.Config, profile_values(recipe, args.profile),
                         cfg.split_assignments(args.set))
    print(f"{recipe.name} ({args.profile} profile, {recipe.default_seeds} seed(s) by default): "
          f"{recipe.description}\n{recipe.reference}\n")
    values = cfg.as_dict(config)
    for info in cfg.describe(recipe.Config):
        paper = f" [paper: {info.paper}]" if info.paper is not None else ""
        print(f"  {info.name} = {fmt_setting(values[info.name])}{paper}\n      {info.doc}")
    claims = recipe.paper(config)
    if claims:
        print("\npaper's numbers:")
        for name, claim in claims.items():
            print(f"  {name} {claim.relation} {fmt(claim.value)} ({claim.source})")

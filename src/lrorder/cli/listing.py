"""`lrorder list`: every recipe with its cost and default seed count."""

from __future__ import annotations

import argparse

from lrorder.cli.options import add_verb


def add(verbs: argparse._SubParsersAction) -> None:
    add_verb(verbs, "list", "every recipe with its cost", "lrorder list").set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from lrorder.core.recipe import all_recipes

    rows = [("recipe", "quick", "full", "seeds", "description")]
    rows += [(r.name, str(r.cost.get("quick", "?")), str(r.cost.get("full", "?")), str(r.default_seeds),
              r.description) for r in all_recipes().values()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])

"""What several verbs share: the one-line parser, verb sub-parsers with an example epilog, the
options `--profile`, `--set`, `--seed(s)`, `--device`, `--data-dir`, and reading them back."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from lrorder.core.errors import UserError

SEEDS_FORMS = "a count N (seeds 0..N-1), a range A:B (seeds A..B-1) or a list S1,S2,..."


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line, like every other user error."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_verb(verbs: argparse._SubParsersAction, name: str, help: str, example: str) -> Parser:
    """A verb's sub-parser whose --help ends with its example command lines (one per line)."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in example.splitlines()) if example else None
    return verbs.add_parser(name, help=help, description=help, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def add_sets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable); see `lrorder show RECIPE`")


def add_device(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=default,
                        help="where torch recipes run (default: auto; numpy-only recipes ignore it)")


def add_seeds(parser: argparse.ArgumentParser, one_seed: bool, default: str | None = None) -> None:
    """`--seeds` (a count, a range or a list), and with `one_seed` the alternative `--seed S`."""
    group = parser.add_mutually_exclusive_group()
    if one_seed:
        group.add_argument("--seed", type=int, help="run this one seed")
    group.add_argument("--seeds", metavar="N|A:B|S1,S2,...", default=default,
                       help=f"the seeds to run: {SEEDS_FORMS}; e.g. 10, 10:20, 3,7,11"
                            + (f" (default {default})" if default else ""))


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="data directory, the same as --set data_dir=DIR for the recipes that "
                             "read data (the CIFAR-10 ones); ignored by the others")


def parse_seeds(text: str) -> list[int]:
    """`--seeds`: "10" is seeds 0..9, "10:20" seeds 10..19, "3,7,11" those three."""
    form = text.strip()
    if re.fullmatch(r"-?\d+", form):
        count = int(form)
        if count < 1:
            raise UserError(f"--seeds must be >= 1 (got {count}): give {SEEDS_FORMS}")
        return list(range(count))
    if re.fullmatch(r"-?\d+:-?\d+", form):
        start, stop = map(int, form.split(":"))
        if start < 0:
            raise UserError(f"--seeds {form}: seeds are >= 0, so A in A:B must be too")
        if stop <= start:
            raise UserError(f"--seeds {form} is an empty range: A:B runs seeds A..B-1, so B must be > A")
        return list(range(start, stop))
    if re.fullmatch(r"-?\d+(,-?\d+)+", form):
        seeds = [int(part) for part in form.split(",")]
        negative = [s for s in seeds if s < 0]
        if negative:
            raise UserError(f"--seeds {form} has a negative seed ({negative[0]}): seeds are >= 0")
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise UserError(f"--seeds {form} repeats seed {repeated[0]}: list each seed once")
        return seeds
    raise UserError(f"--seeds {text!r} is not {SEEDS_FORMS}: e.g. --seeds 10, --seeds 10:20, "
                    "--seeds 3,7,11")


def chosen_seeds(args: argparse.Namespace) -> list[int] | None:
    """The seeds `--seed`/`--seeds` ask for; None when neither is given."""
    if getattr(args, "seed", None) is not None:
        if args.seed < 0:
            raise UserError(f"--seed must be >= 0 (got {args.seed})")
        return [args.seed]
    return None if args.seeds is None else parse_seeds(args.seeds)


def with_data_dir(recipe: Any, sets: Sequence[str], data_dir: str | None) -> list[str]:
    """`sets` plus `data_dir=DIR` when `--data-dir` is given and the recipe's config has the key."""
    from lrorder.core.config import describe

    if data_dir is None or "data_dir" not in {info.name for info in describe(recipe.Config)}:
        return list(sets)
    return [*sets, f"data_dir={data_dir}"]

"""Recipes: one paper experiment each, and the registry that finds them.

A recipe is a subclass of `Recipe` decorated with `@register`, living in a module named
`lrorder.<setting>.recipes` (convex, theory, vision, ...). The registry imports those modules
on first use, so adding an experiment means adding a recipe there and nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import lrorder
from lrorder.core.config import unknown_key_message
from lrorder.core.errors import UserError
from lrorder.core.metrics import Metric

if TYPE_CHECKING:
    from lrorder.core.rundir import Records
    from lrorder.core.runner import RunContext


@dataclasses.dataclass(frozen=True)
class PaperValue:
    """What a paper states for one metric, and how a measurement is judged against it.

    `relation` is "≈" (within `tolerance`), ">=" or "<=" (the paper gives a bound).
    """

    value: float
    source: str
    relation: Literal["≈", ">=", "<="] = "≈"
    tolerance: float = 0.0

    def agrees(self, measured: float) -> bool:
        if measured is None or not math.isfinite(measured):
            return False
        if self.relation == ">=":
            return measured >= self.value - self.tolerance
        if self.relation == "<=":
            return measured <= self.value + self.tolerance
        return abs(measured - self.value) <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a profile takes: about `seconds` on `where`, measured unless `estimated`, with a note
    (e.g. the seed count). `lrorder list` shows it; `lrorder reproduce` starts the longest first."""

    seconds: float
    where: str = "CPU"
    note: str = ""
    estimated: bool = False

    def __str__(self) -> str:
        s = self.seconds
        size = f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"
        notes = ", ".join(filter(None, [self.note, "est." if self.estimated else ""]))
        return f"~{size} {self.where}" + (f" ({notes})" if notes else "")


class Recipe:
    """One paper experiment: its config, profiles, the paper's numbers, the run and its figures.

    Subclasses set the class attributes and implement `run_seed` or `run` (and usually `draw`).
    `run` gets a `RunContext` and returns `{Metric: [value per seed]}`; `draw` renders figures
    from the stored records alone, so `lrorder report` can redraw them without recomputing.
    `uses_torch` says whether `--device` means anything to the recipe (numpy-only ones run on
    the CPU whatever is asked).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    reference: ClassVar[str]
    Config: ClassVar[type]
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {"quick": {}, "full": {}}
    cost: ClassVar[Mapping[str, Cost]] = {}
    default_seeds: ClassVar[int] = 1
    uses_torch: ClassVar[bool] = True

    def paper(self, config: Any) -> dict[str, PaperValue]:
        """The paper's value for each metric it reports (may depend on the config)."""
        return {}

    def missing_data(self, config: Any) -> str | None:
        """None when the recipe can run; else one line: what is missing and how to get it."""
        return None

    def run(self, ctx: RunContext) -> dict[Metric, list[float]]:
        """All seeds; by default one `run_seed` after another, each a unit of work (a killed run
        resumes after the last finished seed). Recipes with other units override this."""
        done = ctx.each({f"seed {seed}": seed for seed in ctx.seeds},
                        lambda seed, _: self.run_seed(ctx, seed))
        per_seed = list(done.values())
        return {Metric(quantity): [values[quantity] for values in per_seed] for quantity in per_seed[0]}

    def run_seed(self, ctx: RunContext, seed: int) -> dict[str, float]:
        """One seed's metrics, `{quantity: value}`."""
        raise NotImplementedError

    def metrics_from_records(self, config: Any, seeds: list[int],
                             records: list[dict[str, Any]]) -> dict[Metric, list[float]]:
        """What `run` returns, computed again from the metrics.jsonl `records` of a run of
        `config` and `seeds` alone: how runs of parts of a recipe's methods are combined into
        one (`lrorder report --combine`). Only recipes whose metrics follow from their records
        can be combined."""
        raise UserError(f"{self.name} runs cannot be combined: its metrics are not all in its "
                        "records; run it with every method at once")

    def draw(self, records: Records, figure_dir: Path) -> None:
        """Draw the recipe's figures into `figure_dir` from `records` only."""

    def discuss(self, records: Records) -> list[str]:
        """Recipe-specific sentences for the report (what the numbers mean)."""
        return []


_REGISTRY: dict[str, Recipe] = {}


def register(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make a recipe known to the CLI under `cls.name`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"two recipes named {cls.name!r}")
    _REGISTRY[cls.name] = cls()
    return cls


def setting_modules(kind: str) -> list[ModuleType]:
    """Every setting's `lrorder.<setting>.<kind>` module (recipes, verbs), imported (a no-op
    once imported), in the order of the settings' names."""
    found = []
    for module in pkgutil.iter_modules(lrorder.__path__):
        candidate = f"lrorder.{module.name}.{kind}"
        if module.ispkg and importlib.util.find_spec(candidate) is not None:
            found.append(importlib.import_module(candidate))
    return found


def all_recipes() -> dict[str, Recipe]:
    """Every registered recipe; the first call imports each `lrorder.<setting>.recipes` module."""
    setting_modules("recipes")
    return dict(sorted(_REGISTRY.items()))


def get_recipe(name: str) -> Recipe:
    recipes = all_recipes()
    if name not in recipes:
        raise UserError(unknown_key_message(name, recipes, "recipe") + "; `lrorder list` shows them all")
    return recipes[name]


def profile_values(recipe: Recipe, profile: str) -> Mapping[str, Any]:
    if profile not in recipe.profiles:
        raise UserError(f"recipe {recipe.name} has no profile {profile!r}: "
                        f"choose one of {', '.join(recipe.profiles)}")
    return recipe.profiles[profile]


@dataclasses.dataclass(frozen=True)
class Verb:
    """A command a setting adds to `lrorder`, declared as plain data in the `VERBS` of its
    `lrorder.<setting>.verbs` module, so that building the CLI imports no setting code.

    `name` is one word, or "GROUP WORD" for a verb under a group (`bench train-step`); a verb
    without a `handler` is such a group. `handler` is "module:function", imported only when the
    verb runs and called with the parsed arguments. `options` are (flags, keyword arguments of
    argparse's `add_argument`) pairs; `example` is command lines (one a line) for the verb's --help.
    """

    name: str
    help: str
    example: str = ""
    handler: str | None = None
    options: tuple[tuple[tuple[str, ...], Mapping[str, Any]], ...] = ()

    def load(self) -> Callable[[Any], int | None]:
        """The handler function (imports its module)."""
        module, _, function = self.handler.partition(":")
        return getattr(importlib.import_module(module), function)


def all_verbs() -> dict[str, Verb]:
    """Every setting's verbs by name, in declaration order; imports each `lrorder.<setting>.verbs`."""
    verbs: dict[str, Verb] = {}
    for module in setting_modules("verbs"):
        for verb in module.VERBS:
            group = verb.name.rpartition(" ")[0]
            if verb.name in verbs:
                raise ValueError(f"two verbs named {verb.name!r}")
            if group and group not in verbs:
                raise ValueError(f"verb {verb.name!r} comes before its group {group!r} is declared")
            verbs[verb.name] = verb
    return verbs

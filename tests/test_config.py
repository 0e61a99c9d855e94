"""Typed configs: parsing, checks and one-message error reports."""

import dataclasses

import pytest

from lrorder.core.config import at_least, between, greater, param, parse_value, resolve
from lrorder.core.errors import UserError
from lrorder.core.recipe import all_recipes, get_recipe, profile_values


@dataclasses.dataclass(frozen=True)
class Example:
    lr: float = param(0.1, "learning rate", check=greater(0))
    steps: int = param(10, "steps", check=at_least(1))
    frac: float = param(0.5, "fraction", check=between(0, 1))
    methods: tuple[str, ...] = param(("large", "small"), "methods")
    noisy: bool = param(False, "noise on")
    decay: float | None = param(None, "optional decay")


@pytest.mark.parametrize("text, kind, expected", [
    ("0.5", float, 0.5), ("3", int, 3), ("true", bool, True), ("off", bool, False),
    ("a,b", tuple[str, ...], ("a", "b")), ("1,2", tuple[int, ...], (1, 2)),
    ("none", float | None, None), ("2e-3", float | None, 2e-3),
])
def test_parse_value(text, kind, expected):
    assert parse_value(text, kind) == expected


def test_overrides_are_typed_and_checked():
    config = resolve(Example, {"steps": 20}, {"lr": "0.01", "methods": "large"})
    assert (config.lr, config.steps, config.methods) == (0.01, 20, ("large",))


@pytest.mark.parametrize("texts, message", [
    ({"lrr": "1"}, "unknown config key 'lrr' (did you mean 'lr'?)"),
    ({"lr": "fast"}, "lr='fast' is not valid: expected a number"),
    ({"lr": "-1"}, "lr must be > 0 (got -1.0)"),
    ({"steps": "0"}, "steps must be >= 1 (got 0)"),
    ({"steps": "1.5"}, "expected an integer"),
    ({"frac": "2"}, "frac must be in [0, 1]"),
    ({"seed": "3"}, "seeds are set with --seed S or --seeds N"),
    ({"lr": "nan"}, "expected a finite number"),
])
def test_bad_values_are_reported(texts, message):
    with pytest.raises(UserError, match=None) as info:
        resolve(Example, {}, texts)
    assert message in str(info.value)


def test_every_problem_is_reported_in_one_line():
    with pytest.raises(UserError) as info:
        resolve(Example, {}, {"lr": "-1", "steps": "0", "bogus": "1"})
    text = str(info.value)
    assert "\n" not in text
    assert all(part in text for part in ("lr must be", "steps must be", "'bogus'"))


@pytest.mark.parametrize("name, profile", [(name, profile) for name, recipe in all_recipes().items()
                                           for profile in recipe.profiles])
def test_every_profile_of_every_recipe_resolves_and_passes_its_checks(name, profile):
    """What `reproduce` and `--profile` run: a profile that names an unknown key or breaks a
    check would fail only when a user runs it."""
    recipe = get_recipe(name)
    config = resolve(recipe.Config, profile_values(recipe, profile))
    assert type(config) is recipe.Config and (not hasattr(config, "problems") or config.problems() == [])
    recipe.paper(config)  # the claims made at this profile can be stated

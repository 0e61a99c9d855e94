"""One run combined from runs of parts of a recipe's methods and seeds (its arms run apart, in
short jobs or on several machines; more seeds run later with `--seeds 3:6`), as if the recipe had
run them all at once: `lrorder report --combine`.

The parts are finished runs of one recipe, profile and resolved config but `methods` and seeds,
together holding every seed of every method once (a seed's numbers do not depend on the other
seeds of its run). The combined run is an ordinary run directory: config.json (methods the
union, in the recipe's order, seeds the union, ascending; each part's directory, methods, seeds,
commit and devices under `parts`), metrics.jsonl (the parts' records), summary.json with every
metric computed again from those records by the function the recipe's own run ends with
(`Recipe.metrics_from_records`), report.md and figures. Everything is checked and computed
before the first write.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrorder.core import config as cfg
from lrorder.core import report, rundir
from lrorder.core.errors import UserError
from lrorder.core.recipe import Recipe, get_recipe
from lrorder.core.runner import provenance, summarize


def combine(parts: Sequence[Path], out: Path, command: str = "") -> dict[str, Any]:
    """Write the run combined from the runs in `parts` into the new run directory `out`; returns
    its summary."""
    runs = [rundir.Records(path) for path in parts]
    recipe = get_recipe(runs[0].recipe)
    methods, seeds = _check(recipe, runs)
    runs.sort(key=lambda run: (methods.index(run.config["config"]["methods"][0]), min(run.config["seeds"])))
    first = runs[0].config
    config = cfg.resolve(recipe.Config, {**first["config"], "methods": methods})
    records = [record for run in runs for record in run.metrics]
    metrics = recipe.metrics_from_records(config, seeds, records)
    if rundir.is_busy(out):
        raise UserError(f"{out} exists and is not empty: --combine writes a new run directory, "
                        "choose another")
    rundir.make_writable_dir(out)
    rundir.write_json(out / rundir.CONFIG, {
        "recipe": recipe.name, "profile": first["profile"], "seeds": seeds,
        "device": first["device"], "config": cfg.as_dict(config), "command": command,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **provenance(),
        "parts": [part for run in runs for part in run.config.get("parts") or [_part(run)]]})
    rundir.write_atomic(out / rundir.METRICS, lambda f: f.writelines(
        json.dumps(rundir.to_json(record), allow_nan=False) + "\n" for record in records))
    summary = summarize(recipe, config, seeds, metrics,
                        [problem for run in runs for problem in run.summary["problems"]],
                        sum(run.summary["elapsed_s"] for run in runs),
                        [device for run in runs for device in run.devices])
    rundir.write_json(out / rundir.SUMMARY, summary)
    report.render(out)
    return summary


def _part(run: rundir.Records) -> dict[str, Any]:
    """Where a part ran and what: a combined run's own parts stand for it (a combine of combines)."""
    return {"dir": str(run.path), "methods": run.config["config"]["methods"], "seeds": run.config["seeds"],
            "git_commit": run.config.get("git_commit"), "devices": run.devices,
            "started": run.config.get("started")}


def _check(recipe: Recipe, runs: Sequence[rundir.Records]) -> tuple[list[str], list[int]]:
    """Refuse, in one line, parts that do not make one run; returns its methods, in the recipe's
    order, and its seeds, ascending."""
    order = next((list(f.default) for f in cfg.describe(recipe.Config) if f.name == "methods"), None)
    if order is None:
        raise UserError(f"{recipe.name} has no methods to run apart: nothing to combine")

    def setup(run: rundir.Records) -> dict[str, Any]:
        stored = run.config
        return {"recipe": stored["recipe"], "profile": stored["profile"],
                **{k: v for k, v in stored["config"].items() if k != "methods"}}

    reference, owner = setup(runs[0]), {}
    for run in runs:
        mine = setup(run)
        differ = [k for k in dict.fromkeys([*reference, *mine]) if mine.get(k) != reference.get(k)]
        if differ:
            raise UserError(f"{run.path} and {runs[0].path} differ in {', '.join(differ)}: only runs of "
                            "one recipe, profile and config but methods and seeds combine")
        if run.summary is None:
            raise UserError(f"{run.path} is unfinished: complete it first "
                            f"(lrorder run {recipe.name} --out {run.path} --resume)")
        if run.skipped_lines:
            raise UserError(f"{run.path / rundir.METRICS} has damaged line(s) "
                            f"{', '.join(map(str, run.skipped_lines))}: its records are not whole; "
                            "run that part again")
        for cell in itertools.product(run.config["seeds"], run.config["config"]["methods"]):
            if cell in owner:
                raise UserError(f"seed {cell[0]} of method {cell[1]} is in both {owner[cell]} and "
                                f"{run.path}: combine one run of each seed and method")
            owner[cell] = run.path
    seeds = sorted({seed for seed, _ in owner})
    chosen = {method for _, method in owner}
    methods = [m for m in order if m in chosen]
    missing = [cell for cell in itertools.product(seeds, methods) if cell not in owner]
    if missing:
        (seed, method), listed = missing[0], ", ".join(map(str, seeds))
        raise UserError(f"no part holds seed {seed} of method {method} ({len(missing)} seed-method pairs "
                        f"missing): the parts must hold every seed ({listed}) of every method "
                        f"({', '.join(methods)}); run it with lrorder run --from {runs[0].path} "
                        f"--seeds {seed}:{seed + 1} --set methods={method} --out DIR")
    return methods, seeds

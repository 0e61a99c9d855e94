"""A sweep's aggregate: every point with mean ± std over seeds, as CSV, markdown and figures.

Read from the run directories' summary.json files only, like every other report.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrorder.core import config as cfg
from lrorder.core import figures, rundir
from lrorder.core.errors import UserError
from lrorder.core.metrics import Metric
from lrorder.core.metrics import aggregate as aggregate_seeds
from lrorder.core.recipe import get_recipe, profile_values
from lrorder.core.report import fmt, measured
from lrorder.core.sweep import read_record, run_summary

MAX_FIGURES = 6


def aggregate(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """(sweep record, one row per grid point, metric names).

    A row's `values[name]` holds one entry per seed, NaN where that seed's run has no value
    (failed, pending), so every row lines up seed by seed.
    """
    if not (out / "runs").is_dir():
        raise UserError(f"{out} keeps no runs/ (only its tables and figures were kept): "
                        "re-run the command in its sweep.json to rebuild them")
    record = read_record(out)
    seeds = record["seeds"]
    rows: dict[str, dict[str, Any]] = {}
    names: dict[str, None] = {}
    for run in record["runs"]:
        key = json.dumps(run["point"], sort_keys=True)
        row = rows.setdefault(key, {"point": run["point"], "values": {}, "status": []})
        try:
            summary = run_summary(out, run)
        except ValueError as exc:
            raise UserError(f"{out / 'runs' / run['id'] / rundir.SUMMARY} is corrupt ({exc}): re-run "
                            "the sweep's command, which moves that run aside and runs it again") from None
        unfinished = "failed" if run.get("status") == "failed" else "pending"
        row["status"].append(summary["status"] if summary else unfinished)
        for name, stats in (summary or {}).get("metrics", {}).items():
            names[name] = None
            per_seed = row["values"].setdefault(name, [np.nan] * len(seeds))
            per_seed[seeds.index(run["seed"])] = np.nan if stats["mean"] is None else stats["mean"]
    return record, list(rows.values()), list(names)


def _stats(row: Mapping[str, Any], name: str, seeds: int) -> dict[str, Any]:
    return aggregate_seeds(Metric(name), row["values"].get(name, [np.nan] * seeds))


def render(out: Path, metrics: Sequence[str] = ()) -> str:
    """Write table.csv, table.md, figures/*.png and report.md of the sweep in `out`.

    Figures are drawn for `metrics`, or by default for those the paper states a value for.
    """
    record, rows, names = aggregate(out)
    unknown = [m for m in metrics if m not in names]
    if unknown:
        raise UserError(f"no metric {', '.join(unknown)} in this sweep; it has: {', '.join(names)}")
    keys = list(record["grid"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*keys, "runs", *[f"{n}_{s}" for n in names for s in ("mean", "std")]])
    table = ["| " + " | ".join([*keys, "runs", *names]) + " |", "|" + "---|" * (len(keys) + 1 + len(names))]
    for row in rows:
        cells = [_stats(row, n, len(record["seeds"])) for n in names]
        done = f"{row['status'].count('complete')}/{len(row['status'])}"
        writer.writerow([*row["point"].values(), done, *[c[s] for c in cells for s in ("mean", "std")]])
        table.append("| " + " | ".join([*row["point"].values(), done,
                                        *[measured(c) for c in cells]]) + " |")
    rundir.write_text(out / "table.csv", buffer.getvalue())
    rundir.write_text(out / "table.md", "\n".join(table) + "\n")
    drawn = _draw(out, record, rows, list(metrics) or _plotted_metrics(record, names))
    lines = [f"# Sweep of {record['recipe']} ({record['profile']} profile, {len(record['seeds'])} seed(s) "
             f"per point, {record['backend']} backend)", "",
             f"Command: `{record['command']}`", "",
             "Grid: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in record["grid"].items()), ""]
    if record["sets"]:
        lines += ["Fixed: " + ", ".join(record["sets"]), ""]
    spread = "mean ± std over seeds" if len(record["seeds"]) > 1 else "the one seed's value"
    lines += [f"Each cell: {spread}. Also in [table.csv](table.csv).", "", *table, ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in drawn]
    text = "\n".join(lines) + "\n"
    rundir.write_text(out / "report.md", text)
    return text


def _plotted_metrics(record: Mapping[str, Any], names: list[str]) -> list[str]:
    """The metrics the paper states a value for (or all), at most MAX_FIGURES of them."""
    recipe = get_recipe(record["recipe"])
    config = cfg.resolve(recipe.Config, profile_values(recipe, record["profile"]),
                         cfg.split_assignments(record["sets"]))
    claimed = [n for n in names if n in recipe.paper(config)]
    return (claimed or names)[:MAX_FIGURES]


def _numeric(texts: list[str]) -> tuple[list[Any], bool]:
    try:
        values = [float(t) for t in texts]
    except ValueError:
        return texts, False
    return values, True


def _draw(out: Path, record: Mapping[str, Any], rows: list[dict], plotted: list[str]) -> list[Path]:
    swept = [k for k, v in record["grid"].items() if len(v) > 1]
    figure_dir = out / "figures"
    drawn = []
    for name in plotted:
        path = figure_dir / f"{name}.png"
        if len(swept) == 1:
            _line(rows, swept[0], record["grid"][swept[0]], name, len(record["seeds"]), path)
        elif len(swept) == 2:
            _heatmap(rows, swept, record["grid"], name, path)
        else:
            continue
        drawn.append(path)
    return drawn


def _line(rows, key, texts, name, seeds, path) -> None:
    x, numeric = _numeric(texts)
    by_value = {row["point"][key]: row["values"].get(name, [np.nan] * seeds) for row in rows}
    fig, axes = figures.figure()
    ax = axes[0][0]
    per_seed = np.array([by_value[t] for t in texts], dtype=float)
    figures.seed_band(ax, x if numeric else range(len(texts)), per_seed.T, label=name)
    if numeric and min(x) > 0 and max(x) / min(x) > 20:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(texts)), texts)
    ax.set(xlabel=key, ylabel=name, title=f"{name} (mean ± std over seeds)")
    figures.save(fig, path)


def _heatmap(rows, keys, grid, name, path) -> None:
    x_key, y_key = keys
    means = np.full((len(grid[y_key]), len(grid[x_key])), np.nan)
    for row in rows:
        i, j = grid[y_key].index(row["point"][y_key]), grid[x_key].index(row["point"][x_key])
        means[i, j] = _stats(row, name, len(row["status"]))["mean"]
    fig, axes = figures.figure(width=6, height=4.5)
    ax = axes[0][0]
    image = ax.imshow(means, origin="lower", aspect="auto", cmap="viridis")
    low, high = np.nanmin(means), np.nanmax(means)
    for (i, j), value in np.ndenumerate(means):
        bright = high > low and (value - low) / (high - low) > 0.6
        ax.text(j, i, fmt(value), ha="center", va="center", fontsize=8, color="k" if bright else "w")
    ax.set_xticks(range(len(grid[x_key])), grid[x_key])
    ax.set_yticks(range(len(grid[y_key])), grid[y_key])
    ax.set(xlabel=x_key, ylabel=y_key, title=f"{name} (mean over seeds)")
    ax.grid(False)
    fig.colorbar(image, ax=ax)
    figures.save(fig, path)

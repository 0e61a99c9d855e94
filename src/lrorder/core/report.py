"""Reports rendered from a run directory's records alone: report.md, comparisons, the index.

Nothing here recomputes a result; `lrorder report` can re-render any run at any time.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrorder.core import rundir
from lrorder.core.recipe import PaperValue, get_recipe


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_setting(value: Any) -> str:
    """A config value as `--set` takes it back (None is "none": the recipe's derived default)."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(fmt_setting, value))
    return fmt(value)


def percent(share: float | None) -> str:
    """A share as a percentage ("74.92%"; "n/a" when unmeasured)."""
    return "n/a" if share is None or not math.isfinite(share) else f"{100 * share:.4g}%"


def seed_share(records, quantity: str) -> str:
    """A per-seed 0/1 flag as a share of the seeds: "7/10 seeds" (seeds where it is
    undefined, e.g. a run that never annealed, are counted apart)."""
    stats = records.metric(quantity)
    if stats is None:  # a run recorded before the metric existed
        return "n/a"
    values = stats["per_seed"]
    known = [v for v in values if v is not None and math.isfinite(v)]
    undefined = f", undefined in {len(values) - len(known)}" if len(known) < len(values) else ""
    return f"{sum(v > 0.5 for v in known)}/{len(known)} seeds{undefined}"


def measured(stats: Mapping[str, Any]) -> str:
    """Mean ± sample std over seeds; the mean alone for one seed (a spread of one is no spread)."""
    if len(stats["per_seed"]) > 1:
        return f"{fmt(stats['mean'])} ± {fmt(stats['std'])}"
    return fmt(stats["mean"])


def _claims(summary: Mapping[str, Any]) -> dict[str, PaperValue]:
    return {name: PaperValue(**claim) for name, claim in summary.get("paper_claims", {}).items()}


def summary_table(summary: Mapping[str, Any]) -> str:
    """Markdown table: each metric measured (mean ± std over seeds) beside the paper's value."""
    claims = _claims(summary)
    lines = ["| metric | measured | per seed | paper | difference | agrees |",
             "|---|---|---|---|---|---|"]
    for name, stats in summary["metrics"].items():
        per_seed = ", ".join(fmt(v) for v in stats["per_seed"])
        claim = claims.get(name)
        if claim is None:
            lines.append(f"| {name} | {measured(stats)} | {per_seed} | — | — | — |")
            continue
        mean = stats["mean"]
        diff = fmt(mean - claim.value) if mean is not None else "n/a"
        paper = f"{claim.relation} {fmt(claim.value)} ({claim.source})"
        verdict = "n/a" if mean is None else "yes" if claim.agrees(mean) else "**no**"
        lines.append(f"| {name} | {measured(stats)} | {per_seed} | {paper} | {diff} | {verdict} |")
    return "\n".join(lines)


def verdict_sentence(summary: Mapping[str, Any]) -> str:
    claims = _claims(summary)
    if not claims:
        return "The paper states no number for these metrics; they are reported as measured."
    means = {name: summary["metrics"].get(name, {}).get("mean") for name in claims}
    unmeasured = [name for name, mean in means.items() if mean is None]
    untested = (f" Not measured in every seed (e.g. a run that never annealed): {', '.join(unmeasured)}."
                if unmeasured else "")
    misses = [f"{name} (measured {fmt(means[name])}, paper {claim.relation} {fmt(claim.value)})"
              for name, claim in claims.items() if means[name] is not None and not claim.agrees(means[name])]
    count = len(claims) - len(unmeasured)
    if not count:
        return (f"None of the {len(claims)} metrics the paper states could be measured "
                f"(the run {summary['status']}): nothing is compared with the paper.")
    if not misses:
        return (f"All {count} measured metrics the paper states agree with it "
                f"(within the tolerance shown, or on the right side of the paper's bound).{untested}")
    return (f"{count - len(misses)} of {count} measured metrics the paper states agree with it; "
            f"these do not: {'; '.join(misses)}.{untested}")


def _part(part: dict[str, Any]) -> str:
    """One part of a combined run: where it is, what it ran, where and from which commit."""
    seeds = f"seeds {', '.join(map(str, part['seeds']))}; " if "seeds" in part else ""  # older combines
    return (f"`{part['dir']}` ({', '.join(part['methods'])}; {seeds}{' -> '.join(part['devices'])}; "
            f"commit {part['git_commit'] or 'unknown'})")


def _where(devices: list[str]) -> str:
    """`device D`, or, for a run resumed on other devices, each part's in order (`cuda -> cpu`)."""
    return (f"device {devices[0]}" if len(set(devices)) == 1
            else f"devices {' -> '.join(devices)} (resumed)")


def render(path: Path) -> str:
    """Redraw the figures of the run at `path` and write its report.md; returns the report."""
    records = rundir.Records(path)
    recipe = get_recipe(records.recipe)
    figure_dir = records.path / "figures"
    figure_dir.mkdir(exist_ok=True)
    recipe.draw(records, figure_dir)
    config, summary = records.config, records.summary
    lines = [f"# {recipe.name}: {recipe.description}", "",
             f"Paper: {recipe.reference}", ""]
    if config.get("command"):
        lines += [f"Command: `{config['command']}`", ""]
    if config.get("parts"):  # a run combined from runs of its methods and seeds (`lrorder report --combine`)
        lines += ["Combined from: " + "; ".join(map(_part, config["parts"])), ""]
    if summary is None:
        lines += [f"Status: **unfinished** ({len(records.metrics)} points logged). Continue it "
                  f"with `lrorder run {recipe.name} --out {records.path} --resume`.", ""]
    else:
        versions = config.get("versions", {})
        lines += [
            f"Status: **{summary['status']}** · profile {config['profile']} · "
            f"seeds {', '.join(map(str, summary['seeds']))} · {_where(records.devices)} · "
            f"{summary['elapsed_s']:.1f} s · lrorder {versions.get('lrorder')} "
            f"(commit {config.get('git_commit') or 'unknown'}) · torch {versions.get('torch')}", ""]
        if summary.get("problems"):
            lines += [f"Diverged: {'; '.join(summary['problems'])}", ""]
        lines += ["## Measured vs paper", "", summary_table(summary), "",
                  verdict_sentence(summary), ""]
        discussion = recipe.discuss(records)
        if discussion:
            lines += ["## What it shows", "", *discussion, ""]
    if records.skipped_lines:
        skipped = ", ".join(map(str, records.skipped_lines))
        print(f"lrorder: {records.path / rundir.METRICS}: skipped damaged line(s) {skipped}", file=sys.stderr)
        lines += [f"Records: line(s) {skipped} of {rundir.METRICS} are damaged (not a JSON record) and "
                  "were left out of the figures.", ""]
    figures = sorted(figure_dir.glob("*.png"))
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{f.stem}](figures/{f.name})" for f in figures]
        lines.append("")
    lines += ["## Config", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {fmt_setting(v)} |" for k, v in config["config"].items()]
    text = "\n".join(lines) + "\n"
    rundir.write_text(records.path / rundir.REPORT, text)
    return text


def compare(paths: Sequence[Path]) -> str:
    """One markdown table of every metric across several runs, with the paper's value."""
    runs = [rundir.Records(p) for p in paths]
    header = ["metric", *[f"{r.path.name} ({r.recipe})" for r in runs], "paper"]
    lines = _differences(runs, header[1:-1])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    names: dict[str, None] = {}
    claims: dict[str, PaperValue] = {}
    for run in runs:
        if run.summary:
            names.update(dict.fromkeys(run.summary["metrics"]))
            claims.update(_claims(run.summary))
    for name in names:
        cells = [measured(r.summary["metrics"][name])
                 if r.summary and name in r.summary["metrics"] else "—" for r in runs]
        claim = claims.get(name)
        paper = f"{claim.relation} {fmt(claim.value)}" if claim else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(lines) + "\n"


def _differences(runs: Sequence[rundir.Records], names: Sequence[str]) -> list[str]:
    """A table of what differs between the runs' set-ups (recipe, profile, seeds, device and
    every resolved config key), so a comparison says what it compares."""
    def setup(run: rundir.Records) -> dict[str, Any]:
        stored = run.config
        return {"recipe": stored["recipe"], "profile": stored["profile"], "seeds": stored["seeds"],
                "device": stored["device"], **stored["config"]}

    if len(runs) == 1:
        return []
    setups = [setup(run) for run in runs]
    keys = dict.fromkeys(key for s in setups for key in s)
    differ = [key for key in keys if len({json.dumps(s.get(key)) for s in setups}) > 1]
    if not differ:
        return ["The runs share every setting: recipe, profile, seeds, device and config.", ""]
    lines = ["Settings that differ:", "", "| setting | " + " | ".join(names) + " |",
             "|" + "---|" * (len(names) + 1)]
    lines += [f"| {key} | " + " | ".join(fmt_setting(s[key]) if key in s else "—" for s in setups) + " |"
              for key in differ]
    return [*lines, "", "Metrics:", ""]


def index(out: Path, entries: Sequence[tuple[str, Path | None, str]], profile: str) -> str:
    """The reproduce index: one section per recipe, linking its report (or saying why skipped)."""
    lines = [f"# lrorder reproduce ({profile} profile)", ""]
    for name, path, note in entries:
        if path is None:
            lines += [f"## {name}: skipped", "", note, ""]
            continue
        summary = rundir.Records(path).summary
        link = os.path.relpath(path / rundir.REPORT, out)
        lines += [f"## [{name}]({link}): {summary['status']}", "", verdict_sentence(summary), "",
                  summary_table(summary), ""]
    text = "\n".join(lines)
    rundir.write_text(out / "index.md", text)
    return text

"""The search table of docs/theory.md, from runs.jsonl: python results/theory-search/table.py."""

import json
from pathlib import Path

import numpy as np

from lrorder.core.config import resolve
from lrorder.theory.config import TheoryConfig

KNOBS = ("d", "n_train", "p0", "q0", "r", "lam", "m_v", "tau0", "eta1", "eta2", "anneal_at", "steps",
         "balanced_u")
SCALED = ("n_train", "p0", "r", "lam")  # unset means Assumption 3.3's scaling
HEADER = ("| run | seeds | s | " + " | ".join(KNOBS) + " | L-S: P, not Q at anneal | S: Q before P "
          "| V-part on Q at anneal (L-S) | W-part on P at anneal (L-S) | P-only err L-S | P-only err S "
          "| paired S - L-S (P-only) |")


def mean_se(values) -> str:
    a = np.asarray(values, dtype=float)
    se = a.std(ddof=1) / np.sqrt(a.size) if a.size > 1 else 0.0
    return f"{a.mean():.3f} ± {se:.3f}"


def single_probe_flags(m: dict, learned_err: float) -> dict[str, list[bool]]:
    """The order as the search read it (before the sustained definition): the probes at L-S's
    anneal, and the first probe below `learned_err` for S."""
    at_anneal = zip(m["w_on_p_err_at_anneal_ls"], m["v_on_q_err_at_anneal_ls"])
    ls = [w <= learned_err and v >= 0.23 for w, v in at_anneal]
    return {"ls_p_before_q": ls, "s_q_before_p": np.less(m["q_learned_iter_s"], m["p_learned_iter_s"])}


runs = [json.loads(line) for line in (Path(__file__).parent / "runs.jsonl").read_text().splitlines()]
print(HEADER)
print("|" + "---|" * (HEADER.count("|") - 1))
for run in runs:
    m = run["metrics"]
    if "p_only_err_s" not in m or "p_only_err_ls" not in m:
        continue
    config = resolve(TheoryConfig, texts=dict(o.split("=", 1) for o in run["overrides"]))
    flags = single_probe_flags(m, config.learned_err)
    values = [config.resolved(k) if k in SCALED else getattr(config, k) for k in KNOBS]
    knobs = " | ".join(str(v) if isinstance(v, bool) else f"{v:.4g}" for v in values)
    print(f"| {run['label']} | {run['seeds']} | {run['seconds']:.0f} | {knobs} "
          f"| {np.mean(flags['ls_p_before_q']):.2f} | {np.mean(flags['s_q_before_p']):.2f} "
          f"| {mean_se(m['v_on_q_err_at_anneal_ls'])} | {mean_se(m['w_on_p_err_at_anneal_ls'])} "
          f"| {mean_se(m['p_only_err_ls'])} | {mean_se(m['p_only_err_s'])} "
          f"| {mean_se(np.subtract(m['p_only_err_s'], m['p_only_err_ls']))} |")

"""Li, Wei & Ma (2019), Sections 2-5 and Appendix F.1, simulated: which pattern a two-layer net
learns first under a large vs a small learning rate, and what that does to generalization.

theory-order    L-S vs S vs S + noise on the same data and initialization, all seeds batched.
theory-conv     the same with Appendix F.2's two-layer convolution net (filters shared by patches).
theory-scaling  the S / L-S test-error ratio as kappa varies, beside the paper's Omega(1/kappa).

The regime (docs/theory.md) is not Assumption 3.3's scaling, which shows no effect at the sizes
a CPU runs; every knob can be set back to it (`--set r=none` etc.).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lrorder.core.metrics import Metric
from lrorder.core.recipe import Cost, PaperValue, Recipe, register
from lrorder.core.report import fmt, seed_share
from lrorder.core.rundir import Records
from lrorder.theory.config import LINEAR_Q_ERR, ScalingConfig, TheoryConfig

PAPER = "Li, Wei & Ma (2019), Towards explaining the regularization effect of initial large learning rate"
REGIME = {"d": 100, "n_train": 1000, "p0": 0.05, "q0": 0.5, "r": 0.3, "tau0": 0.4, "m_w": 100, "m_v": 8000,
          "eta1": 10.0, "eta2": 0.1, "anneal_at": 1000}
QUICK = {**REGIME, "steps": 3000, "n_test": 4000, "probe_every": 100}
# d = 1000 with pN = 50 P-only examples well below d, as Theorem 3.5 needs (docs/theory.md, "At matched
# train loss"): there S, at the train loss L-S reaches early, has not learned P
MATCHED_REGIME = {**REGIME, "d": 1000, "n_train": 5000, "p0": 0.01, "r": 0.12, "lam": 3.2e-4, "m_v": 20000,
                  "steps": 6000, "n_test": 10000, "probe_every": 100}
KEPT = ("test_err", "p_only_err", "matched_loss", "test_err_at_matched_loss", "p_only_err_at_matched_loss",
        "iter_at_matched_loss", "anneal_iter")  # theory-scaling's metrics at each kappa
CONV_REGIME = {"structure": "conv", "d": 64, "patches": 2, "m_w": 1024, "n_train": 500, "p0": 0.05, "q0": 0.7,
               "r": 0.5, "lam": 0.00316, "tau0": 0.4, "eta1": 40.0, "eta2": 0.1, "anneal_at": 1000,
               "methods": ("ls", "s")}


def gap_sentence(records: Records, quantity: str, low: str, high: str) -> str:
    """Is `quantity` of method `low` below that of `high` by more than twice the combined
    standard error?"""
    a, b = (np.asarray(records.metric(quantity, m)["per_seed"], dtype=float) for m in (low, high))
    combined = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) if a.size > 1 else math.nan
    paired = np.std(b - a, ddof=1) / math.sqrt(a.size) if a.size > 1 else math.nan
    diff = b.mean() - a.mean()
    verdict = "a gap" if diff > 2 * combined else "no gap beyond 2 standard errors"
    return (f"{quantity}: {high} - {low} = {fmt(diff)} (combined s.e. {fmt(combined)}, paired s.e. "
            f"{fmt(paired)}, {a.size} seeds): {verdict}.")


@register
class TheoryOrder(Recipe):
    name = "theory-order"
    description = "P/Q two-layer net: L-S learns P first, S learns Q first; test error per example type"
    reference = f"{PAPER}, Theorems 3.4-3.5, Lemmas 4.1-4.2 and 5.2, Appendix F.1"
    Config = TheoryConfig
    profiles = {"quick": QUICK, "full": MATCHED_REGIME}
    cost = {"quick": Cost(100, note="10 seeds"), "full": Cost(95 * 60, "CPU, one core", "10 seeds")}
    default_seeds = 10

    def paper(self, config: TheoryConfig) -> dict[str, PaperValue]:
        claims = {}
        if "ls" in config.methods:
            claims["w_on_p_err_at_anneal_ls"] = PaperValue(
                config.learned_err, "Lemma 4.1: P is fit before the anneal", "<=")
            claims["v_on_q_err_at_anneal_ls"] = PaperValue(
                LINEAR_Q_ERR, "Lemma 4.2: g is near-linear on the Q plane until the anneal", ">=", 0.02)
            claims["v_on_q_err_before_anneal_ls"] = PaperValue(
                LINEAR_Q_ERR, "Lemma 4.2: g near-linear on the Q plane before the anneal (mean over "
                "the second half of the large-LR phase)", ">=", 0.02)
            claims["ls_p_before_q"] = PaperValue(1.0, "Lemmas 4.1-4.2", "≈")
            claims["ls_q_after_anneal"] = PaperValue(1.0, "Theorem 3.4: Q is learned after the anneal", "≈")
        if "s" in config.methods:
            claims["s_q_before_p"] = PaperValue(1.0, "Lemma 5.2: S memorizes Q first", "≈")
        return claims

    def run(self, ctx) -> dict[Metric, list[float]]:
        """One unit of work: every method and seed in one batched simulation."""
        from lrorder.theory import experiment as ex

        c: TheoryConfig = ctx.config
        final = ctx.each({"simulation": c}, lambda config, partial: ex.simulate(ctx, config, partial))
        if final["simulation"] is None:
            return {}
        metrics = ex.figures_of_merit(c, ex.Progress.from_plain(final["simulation"]))
        return {**metrics, **ex.learning_order_flags(metrics, c.learned_err, c.steps)}

    def draw(self, records: Records, figure_dir: Path) -> None:
        from lrorder.theory import plots

        methods = records.config["config"]["methods"]
        plots.learning_order(records, methods, figure_dir / "learning_order.png")
        plots.mechanism(records, methods, figure_dir / "mechanism.png")
        if records.summary and records.summary["metrics"]:
            plots.final_errors(records, methods, figure_dir / "final_errors.png")
            plots.test_vs_train_loss(records, methods, figure_dir / "test_vs_train_loss.png")

    def discuss(self, records: Records) -> list[str]:
        methods = records.config["config"]["methods"]
        if not records.summary["metrics"]:
            return []

        def mean(quantity: str, method: str | None = None) -> str:  # older runs may lack a metric
            return fmt((records.metric(quantity, method) or {}).get("mean"))

        lines = []
        if records.metric("ls_p_before_q"):
            lines.append(f"L-S has learned P but not Q when it anneals in "
                         f"{seed_share(records, 'ls_p_before_q')} (anneal at iteration "
                         f"{mean('anneal_iter', 'ls')}; V-part error on Q then "
                         f"{mean('v_on_q_err_at_anneal', 'ls')}, over the second half of the large-LR "
                         f"phase {mean('v_on_q_err_before_anneal', 'ls')}) and learns Q after the anneal in "
                         f"{seed_share(records, 'ls_q_after_anneal')}.")
        if records.metric("s_q_before_p"):
            lines.append(f"S learns Q before P in {seed_share(records, 's_q_before_p')} (Q at "
                         f"{mean('q_learned_iter', 's')}, P at {mean('p_learned_iter', 's')} iterations, "
                         "means over seeds; censored after the last).")
        level = records.metric("matched_loss")
        if level:
            reached = ", ".join(f"{m} at iteration {mean('iter_at_matched_loss', m)}" for m in methods)
            lines.append(f"At matched train loss {fmt(level['mean'])} (the lowest every method reaches in "
                         f"every seed; means over seeds: {reached}), the papers' yardstick:")
        for low, high in (("ls", "s"), ("ls", "s_noise"), ("s_noise", "s")):
            if low in methods and high in methods:
                lines += [gap_sentence(records, name, low, high) for name in (
                    "p_only_err", "test_err", "p_only_err_at_matched_loss", "test_err_at_matched_loss")
                    if records.metric(name, low)]
        return lines


@register
class TheoryConv(TheoryOrder):
    """theory-order's experiment with Appendix F.2's network: filters shared by the patches."""

    name = "theory-conv"
    description = "P/Q with a two-layer convolution net (Appendix F.2): L-S learns P first, S learns Q first"
    reference = f"{PAPER}, Appendix F.2 (Theorem F.2)"
    profiles = {"quick": {**CONV_REGIME, "steps": 3000, "n_test": 2000},
                "full": {**CONV_REGIME, "steps": 6000, "n_test": 10000}}
    cost = {"quick": Cost(100, note="5 seeds"), "full": Cost(4 * 60, note="5 seeds")}
    default_seeds = 5


@register
class TheoryScaling(Recipe):
    name = "theory-scaling"
    description = "P/Q two-layer net: test error ratio S / L-S as kappa varies, beside Omega(1/kappa)"
    reference = f"{PAPER}, Theorems 3.4-3.5 (L-S error O(p kappa), S error Omega(p))"
    Config = ScalingConfig
    by_kappa = {"n_train": None, "p0": None}  # Assumption 3.3: kappa sets N and p0
    profiles = {"quick": {**QUICK, **by_kappa, "kappas": (0.3, 0.45, 0.7)},
                "full": {**REGIME, **by_kappa, "steps": 6000, "kappas": (0.2, 0.3, 0.45, 0.7)}}
    cost = {"quick": Cost(70, note="5 seeds"), "full": Cost(10 * 60, note="5 seeds", estimated=True)}
    default_seeds = 5

    def run(self, ctx) -> dict[Metric, list[float]]:
        """One unit of work per kappa, each a batched simulation of every method and seed."""
        from lrorder.theory import experiment as ex

        c: ScalingConfig = ctx.config
        configs = {f"kappa {kappa:g}": (kappa, config) for kappa, config in zip(c.kappas, c.at_kappas())}
        finals = ctx.each(configs, lambda unit, partial: ex.simulate(ctx, unit[1], partial, kappa=unit[0]))
        metrics = {}
        for name, (kappa, config) in configs.items():
            if finals[name] is not None:
                metrics.update({metric: values for metric, values in ex.figures_of_merit(
                    config, ex.Progress.from_plain(finals[name]), kappa).items()
                    if metric.quantity in KEPT})
        return metrics

    def draw(self, records: Records, figure_dir: Path) -> None:
        from lrorder.theory import plots

        plots.ratio_vs_kappa(records, figure_dir / "ratio_vs_kappa.png")
        plots.ratio_vs_kappa(records, figure_dir / "test_vs_train_loss.png", at_matched_loss=True)
        plots.mechanism(records, records.config["config"]["methods"], figure_dir / "mechanism.png",
                        kappas=sorted(records.config["config"]["kappas"]))

    def discuss(self, records: Records) -> list[str]:
        if not records.summary["metrics"]:
            return []
        kappas = records.config["config"]["kappas"]
        lines = []
        for quantity, words in (("test_err", "Test error"), ("p_only_err", "P-only test error"),
                                ("test_err_at_matched_loss", "Test error at matched train loss"),
                                ("p_only_err_at_matched_loss", "P-only test error at matched train loss")):
            cells = []
            for kappa in sorted(kappas):
                ls, s = (records.metric(quantity, m, kappa=kappa) for m in ("ls", "s"))
                if ls is None or s is None:  # this kappa diverged
                    cells.append(f"kappa {kappa:g}: diverged")
                    continue
                ratio = s["mean"] / ls["mean"] if ls["mean"] else math.nan
                cells.append(f"kappa {kappa:g}: L-S {fmt(ls['mean'])}, S {fmt(s['mean'])} "
                             f"(S / L-S {fmt(ratio)})")
            lines.append(f"{words} (means over {len(records.summary['seeds'])} seeds): " + "; ".join(cells)
                         + ". Theorems 3.4-3.5 predict S / L-S = Omega(1/kappa): the ratio should grow "
                         "as kappa falls.")
        return lines

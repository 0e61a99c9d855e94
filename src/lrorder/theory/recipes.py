"""Li, Wei & Ma (2019), Sections 2-5 and Appendix F.1, simulated: which pattern a two-layer net
learns first under a large vs a small learning rate, and what that does to generalization.

theory-order    L-S vs S vs S + noise on the same data and initialization, all seeds batched.
theory-conv     the same with Appendix F.2's two-layer convolution net (filters shared by patches).
theory-scaling  the S / L-S test-error ratio as kappa varies, beside the paper's Omega(1/kappa).

The regime (docs/theory.md) is not Assumption 3.3's scaling, which shows no effect at the sizes
a CPU runs; every knob can be set back to it (`--set r=none` etc.).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from lrorder.core.config import between, each, param
from lrorder.core.recipe import PaperValue, Recipe, register
from lrorder.core.report import fmt
from lrorder.core.rundir import Records
from lrorder.theory import plots
from lrorder.theory.experiment import Progress, Simulation, TheoryConfig, figures_of_merit
from lrorder.theory.probes import LINEAR_Q_ERR

PAPER = "Li, Wei & Ma (2019), Towards explaining the regularization effect of initial large learning rate"
REGIME = {"d": 100, "n_train": 1000, "p0": 0.05, "q0": 0.5, "r": 0.3, "tau0": 0.4, "m_w": 100, "m_v": 8000,
          "eta1": 10.0, "eta2": 0.1, "anneal_at": 1000}
QUICK = {**REGIME, "steps": 3000, "n_test": 4000, "probe_every": 100}
CONV_REGIME = {"structure": "conv", "d": 64, "patches": 2, "m_w": 1024, "n_train": 500, "p0": 0.05, "q0": 0.7,
               "r": 0.5, "lam": 0.00316, "tau0": 0.4, "eta1": 40.0, "eta2": 0.1, "anneal_at": 1000,
               "methods": ("ls", "s")}


@contextlib.contextmanager
def _cpu_threads(device: str, config: TheoryConfig):
    """The structured net's tensors are small: on a shared CPU, intra-op threads wait on each other
    more than they help. The convolution's are large enough for threads to pay (1.6x on 2 cores)."""
    threads = torch.get_num_threads()
    if device == "cpu" and config.structure != "conv":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _simulate(ctx, config: TheoryConfig, progress: Progress | None, save) -> dict[str, list[float]]:
    """Run (or resume) one batched simulation, logging every probe per seed."""
    with _cpu_threads(ctx.device, config):
        return _simulate_batched(ctx, config, progress, save)


def _simulate_batched(ctx, config: TheoryConfig, progress: Progress | None, save) -> dict[str, list[float]]:
    sim = Simulation(config, ctx.seeds, ctx.device)
    progress = sim.start() if progress is None else progress.to(ctx.device)

    def log(step: int, values) -> None:
        for i, seed in enumerate(ctx.seeds):
            ctx.log(seed=seed, step=step, **{f"{name}_{method}": float(value[m, i])
                                             for name, value in values.items()
                                             for m, method in enumerate(config.methods)})

    with ctx.progress(config.steps, "iterations") as bar:
        bar.update(progress.step)
        try:
            progress = sim.run(progress, on_probe=log, on_checkpoint=save, on_step=bar.update)
        except FloatingPointError as exc:
            ctx.diverged(str(exc))
            return {}
    return figures_of_merit(config, progress)


def learning_order_flags(metrics: dict[str, list[float]], learned_err: float,
                         steps: int) -> dict[str, list[float]]:
    """Per seed, 1 when the order is the paper's, on the sustained learning iterations (censored at
    steps + 1): L-S has learned P (and still has it at the anneal) and not yet Q when it anneals
    (Lemmas 4.1-4.2), and learns Q after it within the run; S learns Q strictly before P
    (Lemma 5.2). NaN for a seed whose L-S never annealed."""
    flags = {}
    if "anneal_iter_ls" in metrics:
        anneal, p, q, w = (metrics[f"{name}_ls"] for name in (
            "anneal_iter", "p_learned_iter", "q_learned_iter", "w_on_p_err_at_anneal"))
        flags["ls_p_before_q"] = [float(p_at <= a < q_at and w_at <= learned_err) if math.isfinite(a)
                                  else math.nan for a, p_at, q_at, w_at in zip(anneal, p, q, w)]
        flags["ls_q_after_anneal"] = [float(a < q_at <= steps) if math.isfinite(a) else math.nan
                                      for a, q_at in zip(anneal, q)]
    if "q_learned_iter_s" in metrics:
        flags["s_q_before_p"] = [float(q < p) for q, p in zip(metrics["q_learned_iter_s"],
                                                                metrics["p_learned_iter_s"])]
    return flags


def gap_sentence(metrics: dict, name: str, low: str, high: str) -> str:
    """Is `name`_`low` below `name`_`high` by more than twice the combined standard error?"""
    a, b = (np.asarray(metrics[f"{name}_{m}"]["per_seed"], dtype=float) for m in (low, high))
    combined = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) if a.size > 1 else math.nan
    paired = np.std(b - a, ddof=1) / math.sqrt(a.size) if a.size > 1 else math.nan
    diff = b.mean() - a.mean()
    verdict = "a gap" if diff > 2 * combined else "no gap beyond 2 standard errors"
    return (f"{name}: {high} - {low} = {fmt(diff)} (combined s.e. {fmt(combined)}, paired s.e. "
            f"{fmt(paired)}, {a.size} seeds): {verdict}.")


@register
class TheoryOrder(Recipe):
    name = "theory-order"
    description = "P/Q two-layer net: L-S learns P first, S learns Q first; test error per example type"
    reference = f"{PAPER}, Theorems 3.4-3.5, Lemmas 4.1-4.2 and 5.2, Appendix F.1"
    Config = TheoryConfig
    profiles = {"quick": QUICK, "full": {**REGIME, "steps": 6000, "n_test": 10000}}
    cost = {"quick": "~2 min CPU (10 seeds)", "full": "~5 min CPU (10 seeds)"}
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

    def run(self, ctx) -> dict[str, list[float]]:
        metrics = _simulate(ctx, ctx.config, ctx.load_state(), ctx.save_state)
        return {**metrics, **learning_order_flags(metrics, ctx.config.learned_err, ctx.config.steps)}

    def draw(self, records: Records, figure_dir: Path) -> None:
        methods = records.config["config"]["methods"]
        plots.learning_order(records, methods, figure_dir / "learning_order.png")
        if records.summary and records.summary["metrics"]:
            plots.final_errors(records, methods, figure_dir / "final_errors.png")

    def discuss(self, records: Records) -> list[str]:
        metrics = records.summary["metrics"]
        methods = records.config["config"]["methods"]
        if not metrics:
            return []
        means = records.means()

        def mean(name: str) -> str:  # runs recorded before a metric existed lack it
            return fmt(means.get(name))

        lines = []
        if "ls_p_before_q" in metrics:
            lines.append(f"L-S has learned P but not Q when it anneals in {mean('ls_p_before_q')} of the "
                         f"seeds (anneal at iteration {mean('anneal_iter_ls')}; V-part error on Q then "
                         f"{mean('v_on_q_err_at_anneal_ls')}, over the second half of the large-LR phase "
                         f"{mean('v_on_q_err_before_anneal_ls')}) and learns Q after the anneal in "
                         f"{mean('ls_q_after_anneal')}.")
        if "s_q_before_p" in metrics:
            lines.append(f"S learns Q before P in {mean('s_q_before_p')} of the seeds (Q at "
                         f"{mean('q_learned_iter_s')}, P at {mean('p_learned_iter_s')} iterations; "
                         "censored after the last).")
        for low, high in (("ls", "s"), ("ls", "s_noise"), ("s_noise", "s")):
            if low in methods and high in methods:
                lines += [gap_sentence(metrics, name, low, high) for name in ("p_only_err", "test_err")]
        return lines


@register
class TheoryConv(TheoryOrder):
    """theory-order's experiment with Appendix F.2's network: filters shared by the patches."""

    name = "theory-conv"
    description = "P/Q with a two-layer convolution net (Appendix F.2): L-S learns P first, S learns Q first"
    reference = f"{PAPER}, Appendix F.2 (Theorem F.2)"
    profiles = {"quick": {**CONV_REGIME, "steps": 3000, "n_test": 2000},
                "full": {**CONV_REGIME, "steps": 6000, "n_test": 10000}}
    cost = {"quick": "~5 min CPU (5 seeds)", "full": "~14 min CPU (5 seeds)"}
    default_seeds = 5


@dataclasses.dataclass(frozen=True)
class ScalingConfig(TheoryConfig):
    kappas: tuple[float, ...] = param((0.2, 0.3, 0.45), "values of kappa: each sets N = d/kappa^2 and "
                                      "p0 = kappa^2/2 (Assumption 3.3)", check=each(between(1e-3, 1.0)))
    methods: tuple[str, ...] = param(("ls", "s"), "methods to run, of ls, s, s_noise")

    def problems(self) -> list[str]:
        """The base config's checks, at every kappa of the sweep (each sets N and p0)."""
        found = [p for kappa in self.kappas for p in TheoryConfig.problems(
            dataclasses.replace(self, kappa=kappa, n_train=None, p0=None))]
        return list(dict.fromkeys(found))


@register
class TheoryScaling(Recipe):
    name = "theory-scaling"
    description = "P/Q two-layer net: test error ratio S / L-S as kappa varies, beside Omega(1/kappa)"
    reference = f"{PAPER}, Theorems 3.4-3.5 (L-S error O(p kappa), S error Omega(p))"
    Config = ScalingConfig
    by_kappa = {"n_train": None, "p0": None}  # Assumption 3.3: kappa sets N and p0
    profiles = {"quick": {**QUICK, **by_kappa, "kappas": (0.3, 0.45, 0.7)},
                "full": {**REGIME, **by_kappa, "steps": 6000, "kappas": (0.2, 0.3, 0.45, 0.7)}}
    cost = {"quick": "~1 min CPU (5 seeds)", "full": "~10 min CPU (5 seeds, estimated)"}
    default_seeds = 5

    def run(self, ctx) -> dict[str, list[float]]:
        """One simulation per kappa; a resume point records the finished kappas and the current one."""
        done = ctx.load_state() or {"finished": {}, "current": None}
        c: ScalingConfig = ctx.config
        for kappa in c.kappas:
            if kappa in done["finished"]:
                continue
            config = dataclasses.replace(c, kappa=kappa, n_train=None, p0=None)

            def save(progress, kappa=kappa):
                ctx.save_state({**done, "current": (kappa, progress)})

            current = done["current"]
            resumed = current[1] if current and current[0] == kappa else None
            metrics = _simulate(_Tagged(ctx, kappa), config, resumed, save)
            done["finished"][kappa] = metrics
            done["current"] = None
            ctx.save_state(done)
        return {f"{name}_kappa{kappa:g}": values for kappa, metrics in done["finished"].items()
                for name, values in metrics.items() if name.startswith(("test_err", "p_only_err"))}

    def draw(self, records: Records, figure_dir: Path) -> None:
        if not records.summary:
            return
        kappas = np.array(records.config["config"]["kappas"])
        metrics = records.summary["metrics"]

        def per_seed(name: str) -> np.ndarray:  # [seeds, kappas]
            return np.array([metrics[f"{name}_kappa{k:g}"]["per_seed"] for k in kappas], dtype=float).T

        errors = {name: (per_seed(f"{name}_s"), per_seed(f"{name}_ls"))
                  for name in ("test_err", "p_only_err")}
        plots.scaling(kappas, errors, figure_dir / "ratio_vs_kappa.png")


class _Tagged:
    """A run context whose logged points carry `kappa`, so one metrics.jsonl holds every kappa."""

    def __init__(self, ctx, kappa: float):
        self._ctx, self._kappa = ctx, kappa

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def log(self, **values) -> None:
        self._ctx.log(kappa=self._kappa, **values)

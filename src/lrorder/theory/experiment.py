"""One simulation of the P/Q setting: L-S, S and S + noise on the same data and initialization.

`TheoryConfig` holds every knob of Sections 2-3 and Appendix F.1 (None means "Assumption 3.3's
scaling"); `Simulation` builds each seed's data, network and initialization from that seed
alone, advances every method and seed in one batched program (`optim.Trainer`), probes along
the way (`probes.probe`) and condenses a run into the per-seed figures of merit of issue 4.
The gradient and pre-activation noise is one stream for the whole batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import torch

from lrorder.core.config import at_least, between, greater, param
from lrorder.theory import data, model, optim, probes

MAX_TRAIN_ENTRIES = 5e8  # training inputs of one seed (float32: 2 GB); beyond it, say so
METHODS = ("ls", "s", "s_noise")
Probes = dict[str, torch.Tensor]  # name -> [M, S]


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
    d: int = param(100, "input dimension of each part (x1, x2 in R^d); for conv the patch size",
                   check=at_least(4))
    kappa: float = param(0.3, "kappa of Assumption 3.3 (N/d = 1/kappa^2, p0 = kappa^2/2); used "
                         "where n_train, p0 are unset", check=between(1e-3, 1.0))
    n_train: int | None = param(None, "N, training examples (unset: d/kappa^2; conv: d k/kappa^2)",
                                check=at_least(1),
                                paper="d / kappa^2")
    r: float | None = param(None, "|zeta|, the Q pattern's gap (unset: d^-3/4; conv: (d k)^-3/4 / k)",
                              check=between(1e-6, 1.0),
                              paper="d^-3/4")
    p0: float | None = param(None, "P-only probability (unset: kappa^2/2)", check=between(0.0, 1.0),
                               paper="kappa^2 / 2")
    q0: float = param(0.4, "Q-only probability (Theta(1) in Assumption 3.3)", check=between(0.0, 1.0),
                       paper="Theta(1)")
    lam: float | None = param(None, "weight decay lambda (unset: d^-5/4; conv: (d k)^-5/4)",
                                check=at_least(0.0),
                                paper="d^-5/4")
    structure: Literal["wv", "u", "conv"] = param("wv", "wv: W sees x1, V sees x2 (Section 2); u: one "
                                                  "unstructured U sees both; conv: filters shared by "
                                                  "patches of x (Appendix F.2)")
    patches: int = param(4, "conv: k patches of d coordinates at stride d/k; x2 in the last d/k "
                         "coordinates, x1 in the d (k - 2)/k + d before them", check=at_least(2))
    balanced_u: bool = param(True, "second layer with exactly half + and half - signs, else i.i.d. as "
                             "in Section 2: removes the mean of the bias-free net's random output "
                             "offset, and halves the seeds in which V never learns Q (docs/theory.md)")
    m_w: int = param(100, "W neurons (the width of U for structure u, the filters for conv)",
                     check=at_least(1))
    m_v: int = param(2000, "V neurons: Q is fitted only by the ~r/pi of them whose sign differs "
                     "on z and z +- zeta, so it needs many", check=at_least(1))
    tau0: float = param(0.4, "initialization std of U (Section 3)", check=greater(0.0))
    eta1: float = param(1.0, "large learning rate of L-S", check=greater(0.0))
    eta2: float = param(0.01, "small learning rate (L-S after the anneal, S, S + noise)", check=greater(0.0))
    tau_xi: float | None = param(None, "gradient-noise std (unset: the stationary value of "
                                 "Assumption 3.1 at tau0, eta1, lambda)", check=at_least(0.0),
                                 paper="eq. 3.3")
    eps1: float = param(0.01, "L-S anneals when the train loss < eps1 + q log 2", check=greater(0.0))
    eps2: float = param(1e-3, "every method stops at train loss < eps2 (absolute, not the paper's "
                        "eps1/q, which the runs may never reach)", check=greater(0.0))
    anneal_at: int = param(1500, "anneal at this iteration if the loss rule has not fired",
                           check=at_least(0))
    sigma: float = param(0.2, "S + noise: std of the pre-activation noise before its anneal "
                         "(Appendix F.1)", check=at_least(0.0))
    per_example_noise: bool = param(False, "S + noise: fresh noise per example (default: one "
                                    "value per neuron shared by all examples)")
    steps: int = param(15000, "iterations (a cap: runs stop earlier at eps2)", check=at_least(1))
    n_test: int = param(10000, "fresh test examples per seed", check=at_least(1))
    probe_every: int = param(100, "iterations between probes", check=at_least(1))
    learned_err: float = param(0.1, "a part 'has learned' its pattern once its error on its "
                               "examples is below this", check=between(0.0, 0.5))
    learned_probes: int = param(3, "... and stays below it for this many consecutive probes (or to the "
                                "end of the run): under the large LR single probes of the V-part flip",
                                check=at_least(1))
    methods: tuple[str, ...] = param(METHODS, "methods to run, of ls, s, s_noise")

    def problems(self) -> list[str]:
        unknown = [m for m in self.methods if m not in METHODS]
        problems = [f"unknown methods {unknown}: choose from {', '.join(METHODS)}"] if unknown else []
        if not self.methods or len(set(self.methods)) != len(self.methods):
            problems.append(f"methods must be distinct and not empty (got {','.join(self.methods)})")
        if self.resolved("p0") + self.q0 > 1:
            problems.append(f"p0 + q0 must be <= 1 (got {self.resolved('p0')} + {self.q0})")
        if self.tau_xi is None and not 0 < self.eta1 * self.resolved("lam") < 1:
            problems.append("eta1 * lam must be in (0, 1) for the stationary noise of eq. 3.3 "
                            f"(got {self.eta1 * self.resolved('lam'):g}): lower eta1 or lam, or set tau_xi")
        if self.structure == "conv" and (self.d % self.patches or self.d // self.patches < 2):
            problems.append(f"conv needs d divisible by patches with d/patches >= 2 (got d={self.d}, "
                            f"patches={self.patches})")
        if self.resolved("n_train") * self.d > MAX_TRAIN_ENTRIES:  # d: x1's size up to a factor 2 (conv)
            problems.append(f"n_train * d = {self.resolved('n_train') * self.d:g} is too large "
                            f"(> {MAX_TRAIN_ENTRIES:g}): raise kappa or set n_train")
        return problems

    def resolved(self, name: str) -> float:
        """A knob's value, with Assumption 3.3's scaling where it is unset (for conv, Theorem F.2's:
        d replaced by d k and r by r / k)."""
        value = getattr(self, name)
        if value is not None:
            return value
        k = self.patches if self.structure == "conv" else 1
        default = data.paper_defaults(self.d * k, self.kappa)[name]
        return default / k if name == "r" else default

    def distribution(self) -> data.Distribution:
        knobs = {"r": self.resolved("r"), "p0": self.resolved("p0"), "q0": self.q0}
        if self.structure == "conv":  # x = (x1, x2) fills the patches: x2 the last stride, x1 the rest
            stride = self.d // self.patches
            return data.Distribution(d=self.d + (self.patches - 2) * stride, q_dim=stride, **knobs)
        return data.Distribution(d=self.d, **knobs)

    def noise_std(self) -> float:
        return (optim.stationary_tau_xi(self.tau0, self.eta1, self.resolved("lam"))
                if self.tau_xi is None else self.tau_xi)


def make_method(name: str, c: TheoryConfig) -> optim.Method:
    if name == "ls":
        return optim.large_then_small(c.eta1, c.eta2, c.eps1, c.eps2, c.anneal_at)
    if name == "s":
        return optim.small(c.eta2, c.eps2)
    return optim.small_with_noise(c.eta2, c.sigma, c.eps1, c.eps2, c.anneal_at)


def _concat(parts: list[data.Examples]) -> data.Examples:
    fields = dataclasses.fields(data.Examples)
    return data.Examples(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields})


def _groups(methods: list[optim.Method]) -> list[list[int]]:
    """Runs of consecutive methods that share one batched program: while a method has pre-activation
    noise, V takes the slower sorted-threshold (or per-example) path for the whole batch, so it is
    kept apart from the methods that can use the plain rays."""
    groups: list[list[int]] = []
    for i, method in enumerate(methods):
        if groups and (max(method.preact) > 0) == (max(methods[groups[-1][0]].preact) > 0):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclasses.dataclass
class Progress:
    """A run so far: one optimizer state per group of methods, the probe history ([M, S] per
    probe) and the probes taken at each run's first anneal."""

    states: list[optim.State]
    steps: list[int]
    history: dict[str, list[torch.Tensor]]
    at_anneal: list[Probes]

    def to(self, device: str) -> Progress:
        """The same progress with its tensors on `device` (a resume point is loaded on the CPU)."""
        for state in self.states:
            state.weights = [w.to(device) for w in state.weights]
            state.phase, state.anneal_step, state.stop_step = (
                t.to(device) for t in (state.phase, state.anneal_step, state.stop_step))
        self.at_anneal = [{k: v.to(device) for k, v in a.items()} for a in self.at_anneal]
        return self

    @property
    def step(self) -> int:
        return self.states[0].step

    def merged(self, field: str) -> torch.Tensor:
        """[M, S] `field` (anneal_step, stop_step) of every method, in config order."""
        return torch.cat([getattr(s, field) for s in self.states]).cpu()


class Simulation:
    def __init__(self, config: TheoryConfig, seeds: list[int], device: str = "cpu"):
        self.config, self.seeds = config, seeds
        dist = config.distribution()
        dirs = data.directions(dist, seeds, device)
        trains, tests, archs, inits = [], [], [], []
        methods = [make_method(m, config) for m in config.methods]
        widths = (config.m_w, config.m_v)
        for i, seed in enumerate(seeds):  # each seed's draws depend on that seed only
            gen = torch.Generator(device).manual_seed(seed)
            one = data.Directions(*(t[i:i + 1] for t in (dirs.w_star, dirs.z, dirs.zeta_unit)))
            trains.append(data.sample(dist, one, config.resolved("n_train"), gen))
            tests.append(data.sample(dist, one, config.n_test, gen))
            conv = (model.Convolution(config.d, config.patches, one.q_basis)
                    if config.structure == "conv" else None)
            arch = model.architecture(config.structure, widths, dist.d, dist.rays(device), 1, gen,
                                      config.balanced_u, conv)
            archs.append(arch)
            inits.append(model.init_weights(arch, 1, config.tau0, gen))
        self.train, self.test = _concat(trains), _concat(tests)
        self.arch = model.concat_seeds(archs)
        self.init = [torch.cat(ws, dim=1) for ws in zip(*inits)]  # [1, S, k, f]: shared by methods
        noise_seed = sum(7919 * (i + 1) * (s + 1) for i, s in enumerate(seeds))
        noise_gen = torch.Generator(device).manual_seed(noise_seed)
        self.groups = _groups(methods)
        self.trainers = [optim.Trainer(self.arch, self.train, [methods[i] for i in group],
                                       config.resolved("lam"), config.noise_std(),
                                       config.per_example_noise, noise_gen)
                         for group in self.groups]

    def start(self) -> Progress:
        states = [t.start([w.expand(len(g), -1, -1, -1).clone() for w in self.init])
                  for t, g in zip(self.trainers, self.groups)]
        return Progress(states, [], {}, [{} for _ in states])

    def probe(self, weights: list[torch.Tensor]) -> Probes:
        return probes.probe(self.arch, weights, self.train, self.test)

    def run(self, progress: Progress, on_probe: Callable[[int, Probes], None] = lambda step, p: None,
            on_checkpoint: Callable[[Progress], None] = lambda p: None,
            on_step: Callable[[], None] = lambda: None) -> Progress:
        """Advance to `config.steps`, probing every `probe_every` iterations and at the end; a
        checkpoint follows every probe (it is small: the weights and the probe history)."""
        self.trainers[-1].resume(progress.states[-1])  # one noise stream: the last group drew last

        def record_anneal(at_anneal: Probes, state: optim.State, fired: torch.Tensor) -> None:
            for name, value in self.probe(state.weights).items():
                kept = at_anneal.get(name, torch.full_like(value, math.nan))
                at_anneal[name] = torch.where(fired, value, kept)

        def take_probe() -> None:
            groups = [self.probe(state.weights) for state in progress.states]
            values = {name: torch.cat([g[name] for g in groups]) for name in groups[0]}
            progress.steps.append(progress.step)
            for name, value in values.items():
                progress.history.setdefault(name, []).append(value.cpu())
            on_probe(progress.step, values)

        while progress.step < self.config.steps:
            fresh = not progress.steps or progress.steps[-1] != progress.step  # a resumed probe is logged
            if fresh and progress.step % self.config.probe_every == 0:
                take_probe()
                on_checkpoint(progress)
            for trainer, state, at_anneal in zip(self.trainers, progress.states, progress.at_anneal):
                loss = trainer.step(state, lambda s, fired, a=at_anneal: record_anneal(a, s, fired))
                if not bool(torch.isfinite(loss).all()):
                    raise FloatingPointError(f"non-finite train loss at iteration {state.step}")
            on_step()
        take_probe()
        return progress


def first_learned(steps: list[int], series: torch.Tensor, level: float, hold: int, cap: int) -> torch.Tensor:
    """[M, S] first probed step from which `series` [P, M, S] stays below `level` for `hold`
    consecutive probes (fewer where the run ends first); `cap` if never."""
    below = series < level
    padded = torch.cat([below, below.new_ones(hold - 1, *below.shape[1:])])
    held = padded.unfold(0, hold, 1).all(-1)  # [P, M, S]
    first = held.float().argmax(0)
    return torch.where(held.any(0), torch.tensor(steps)[first], torch.full_like(first, cap)).float()


def mean_before(steps: list[int], series: torch.Tensor, anneal: torch.Tensor) -> torch.Tensor:
    """[M, S] mean of `series` [P, M, S] over the probes in the second half of each run's first
    phase, [anneal / 2, anneal]: what the part knew through the phase, not at one probe."""
    at = torch.tensor(steps, dtype=torch.float)[:, None, None]
    inside = (at >= anneal / 2) & (at <= anneal)
    return torch.where(inside, series, 0.0).sum(0) / inside.sum(0)


def figures_of_merit(config: TheoryConfig, progress: Progress) -> dict[str, list[float]]:
    """Per-seed metrics named `<metric>_<method>` (issue 4): final errors, the anneal, learning order.

    `p_learned_iter` / `q_learned_iter`: the probe from which the W-part's error on P (the V-part's
    on Q) stays below `learned_err` for `learned_probes` probes; `steps + 1` if never (censored).
    Anneal metrics exist for the methods that anneal (ls, s_noise): the probes at the anneal
    (`*_at_anneal`) and the V-part's mean error over the second half of the first phase
    (`v_on_q_err_before_anneal`).
    """
    history = {name: torch.stack(values) for name, values in progress.history.items()}
    per_method = {name: history[name][-1] for name in (
        "test_err", "p_only_err", "q_only_err", "both_err", "w_on_p_err", "v_on_q_err", "train_loss")}
    for pattern, part in (("p", "w_on_p_err"), ("q", "v_on_q_err")):
        per_method[f"{pattern}_learned_iter"] = first_learned(
            progress.steps, history[part], config.learned_err, config.learned_probes, config.steps + 1)
    stop = progress.merged("stop_step")
    per_method["stop_iter"] = torch.where(stop == optim.NEVER, config.steps, stop).float()
    anneal = progress.merged("anneal_step").float()
    per_method["anneal_iter"] = torch.where(anneal == optim.NEVER, math.nan, anneal)
    per_method["v_on_q_err_before_anneal"] = mean_before(progress.steps, history["v_on_q_err"],
                                                         per_method["anneal_iter"])
    at_anneal = [{name: a.get(name, torch.full_like(s.anneal_step, math.nan, dtype=torch.float)).cpu()
                  for name in ("v_on_q_err", "w_on_p_err", "train_loss")}
                 for a, s in zip(progress.at_anneal, progress.states)]
    for name in at_anneal[0]:
        per_method[f"{name}_at_anneal"] = torch.cat([a[name] for a in at_anneal])
    metrics = {}
    for name, values in per_method.items():
        for i, method in enumerate(config.methods):
            if method == "s" and "anneal" in name:
                continue  # S never anneals
            metrics[f"{name}_{method}"] = values[i].double().tolist()
    return metrics

"""One simulation of the P/Q setting: L-S, S and S + noise on the same data and initialization.

Given a `TheoryConfig` (`lrorder.theory.config`), `Simulation` builds each seed's data, network
and initialization from that seed alone, advances every method and seed in one batched program
(`optim.Trainer`) and probes along the way (`probes.probe`); `simulate` runs it as a resumable
unit of work and `figures_of_merit` condenses it into per-seed metrics. Every seed draws its
data, initialization and noise from its own generators, so seed s is the same run whatever
other seeds share its batch.

Probes come every `probe_every` iterations (every run's) and, in between, where a run's train
loss moves fast: at every `probe_every / DENSE`-th iteration a run whose loss has fallen below
DROP times its loss at its own last probe owns a probe. A run's records and readings use its own
probes only, so they too depend on that run alone; the readings at matched train loss
(`lrorder.core.matched`) get a point at least every 3% of loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from lrorder.core import matched
from lrorder.core.metrics import Metric
from lrorder.theory import data, model, optim, probes
from lrorder.theory.config import TheoryConfig

Probes = dict[str, torch.Tensor]  # name -> [M, S]
NOISE_SEED = 1 << 32  # seed s's gradient and pre-activation noise come from NOISE_SEED + s
DENSE, DROP = 10, 0.97  # at most DENSE more probes per probe_every, for a run whose loss fell 3%
FINAL = ("test_err", "p_only_err", "q_only_err", "both_err", "w_on_p_err", "v_on_q_err", "train_loss",
         "w_signal_from_q_examples", "w_signal_from_p_only", "w_margin_p_only", "w_alignment")


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
    probe), which runs own each probe ([M, S] bool), each run's train loss at its last own probe
    and the probes taken at each run's first anneal."""

    states: list[optim.State]
    steps: list[int]
    history: dict[str, list[torch.Tensor]]
    own: list[torch.Tensor]
    probed_loss: torch.Tensor
    at_anneal: list[Probes]

    def to(self, device: str) -> Progress:
        """The same progress with its tensors on `device` (a resume point is loaded on the CPU)."""
        for state in self.states:
            state.weights = [w.to(device) for w in state.weights]
            state.signal = [s.to(device) for s in state.signal]
            state.phase, state.anneal_step, state.stop_step = (
                t.to(device) for t in (state.phase, state.anneal_step, state.stop_step))
        self.at_anneal = [{k: v.to(device) for k, v in a.items()} for a in self.at_anneal]
        return self

    @property
    def step(self) -> int:
        return self.states[0].step

    def to_plain(self) -> dict[str, Any]:
        """The progress as plain data (tensors, numbers, lists, dicts): a resume point's form."""
        states = [{f.name: getattr(s, f.name) for f in dataclasses.fields(s)} for s in self.states]
        return {"states": states, "steps": list(self.steps), "history": self.history, "own": self.own,
                "probed_loss": self.probed_loss, "at_anneal": self.at_anneal}

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> Progress:
        return cls([optim.State(**s) for s in plain["states"]], list(plain["steps"]),
                   {k: list(v) for k, v in plain["history"].items()}, list(plain["own"]),
                   plain["probed_loss"], list(plain["at_anneal"]))

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
        self.mechanism = probes.Mechanism.of(self.train, dirs.w_star)
        self.arch = model.concat_seeds(archs)
        self.init = [torch.cat(ws, dim=1) for ws in zip(*inits)]  # [1, S, k, f]: shared by methods
        noise = [torch.Generator(device).manual_seed(NOISE_SEED + seed) for seed in seeds]  # one per seed
        self.groups = _groups(methods)
        self.trainers = [optim.Trainer(self.arch, self.train, [methods[i] for i in group],
                                       config.resolved("lam"), config.noise_std(),
                                       config.per_example_noise, noise, self.mechanism.p_only)
                         for group in self.groups]

    def start(self) -> Progress:
        states = [t.start([w.expand(len(g), -1, -1, -1).clone() for w in self.init])
                  for t, g in zip(self.trainers, self.groups)]
        runs = (len(self.config.methods), len(self.seeds))
        return Progress(states, [], {}, [], torch.full(runs, math.inf), [{} for _ in states])

    def probe(self, state: optim.State) -> Probes:
        return probes.probe(self.arch, state.weights, self.train, self.test, self.mechanism, state.signal)

    def run(self, progress: Progress,
            on_probe: Callable[[int, Probes, torch.Tensor], None] = lambda step, p, own: None,
            on_checkpoint: Callable[[Progress], None] = lambda p: None,
            on_step: Callable[[], None] = lambda: None) -> Progress:
        """Advance to `config.steps`, probing every `probe_every` iterations, where a run's loss
        moves fast (module docstring) and at the end; a checkpoint follows every regular probe
        (it is small: the weights, the accumulated signal and the probe history)."""
        self.trainers[-1].resume(progress.states[-1])  # one noise stream: the last group drew last
        every, dense = self.config.probe_every, max(1, self.config.probe_every // DENSE)
        everyone = torch.ones_like(progress.probed_loss, dtype=torch.bool)

        def record_anneal(at_anneal: Probes, state: optim.State, fired: torch.Tensor) -> None:
            for name, value in self.probe(state).items():
                kept = at_anneal.get(name, torch.full_like(value, math.nan))
                at_anneal[name] = torch.where(fired, value, kept)

        def take_probe(own: torch.Tensor) -> None:
            groups = [self.probe(state) for state in progress.states]
            values = {name: torch.cat([g[name] for g in groups]) for name in groups[0]}
            progress.steps.append(progress.step)
            progress.own.append(own.cpu())
            for name, value in values.items():
                progress.history.setdefault(name, []).append(value.cpu())
            progress.probed_loss = torch.where(own.cpu(), values["train_loss"].cpu(), progress.probed_loss)
            on_probe(progress.step, values, own)

        while progress.step < self.config.steps:
            fresh = not progress.steps or progress.steps[-1] != progress.step  # a resumed probe is logged
            if fresh and progress.step % every == 0:
                take_probe(everyone)
                on_checkpoint(progress)
            losses = []
            for group, trainer, state, at_anneal in zip(self.groups, self.trainers, progress.states,
                                                        progress.at_anneal):
                loss = trainer.step(state, lambda s, fired, a=at_anneal: record_anneal(a, s, fired))
                if not bool(torch.isfinite(loss).all()):
                    where = ", ".join(f"{self.config.methods[group[m]]} seed {self.seeds[s]}"
                                      for m, s in (~torch.isfinite(loss)).nonzero().tolist())
                    raise FloatingPointError(f"non-finite train loss of {where} at iteration {state.step}")
                losses.append(loss)
            on_step()
            if progress.step % dense == 0 and progress.step % every and progress.step < self.config.steps:
                fell = torch.cat(losses).cpu() < DROP * progress.probed_loss
                if bool(fell.any()):
                    take_probe(fell)
        take_probe(everyone)
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


def at_matched_loss(steps: list[int], history: dict[str, torch.Tensor], own: torch.Tensor
                    ) -> tuple[float, dict[str, torch.Tensor]]:
    """The matched train loss (the lowest every method reaches in every seed, on each run's own
    probes) and, per method and seed [M, S], the P-only and overall test error and the iteration
    at the first own probe at or below it."""
    loss = torch.where(own, history["train_loss"], math.nan).double().numpy()
    level = matched.matched_loss(loss)
    series = {"p_only_err": history["p_only_err"], "test_err": history["test_err"],
              "iter": torch.tensor(steps, dtype=torch.float64)[:, None, None].expand(loss.shape)}
    return level, {f"{name}_at_matched_loss": torch.from_numpy(matched.first_at_or_below(
        loss, values.double().numpy(), level)) for name, values in series.items()}


def figures_of_merit(config: TheoryConfig, progress: Progress, kappa: float | None = None
                     ) -> dict[Metric, list[float]]:
    """Per-seed metrics of every method: final errors and probes, the anneal, learning order, the
    readings at matched train loss.

    `p_learned_iter` / `q_learned_iter`: the regular probe from which the W-part's error on P (the
    V-part's on Q) stays below `learned_err` for `learned_probes` probes; `steps + 1` if never
    (censored). Anneal metrics exist for the methods that anneal (ls, s_noise): the probes at the
    anneal (`*_at_anneal`) and the V-part's mean error over the second half of the first phase
    (`v_on_q_err_before_anneal`). `matched_loss` is one level for the whole run (with more seeds
    it can only rise); `*_at_matched_loss` read each run there (`at_matched_loss`).
    """
    history = {name: torch.stack(values) for name, values in progress.history.items()}
    own = torch.stack(progress.own)
    regular = [i for i, step in enumerate(progress.steps)
               if step % config.probe_every == 0 or i == len(progress.steps) - 1]
    steps = [progress.steps[i] for i in regular]
    per_method = {name: history[name][-1] for name in FINAL if name in history}
    for pattern, part in (("p", "w_on_p_err"), ("q", "v_on_q_err")):
        per_method[f"{pattern}_learned_iter"] = first_learned(
            steps, history[part][regular], config.learned_err, config.learned_probes, config.steps + 1)
    stop = progress.merged("stop_step")
    per_method["stop_iter"] = torch.where(stop == optim.NEVER, config.steps, stop).float()
    anneal = progress.merged("anneal_step").float()
    per_method["anneal_iter"] = torch.where(anneal == optim.NEVER, math.nan, anneal)
    per_method["v_on_q_err_before_anneal"] = mean_before(steps, history["v_on_q_err"][regular],
                                                         per_method["anneal_iter"])
    level, readings = at_matched_loss(progress.steps, history, own)
    per_method.update(readings)
    at_anneal = [{name: a.get(name, torch.full_like(s.anneal_step, math.nan, dtype=torch.float)).cpu()
                  for name in ("v_on_q_err", "w_on_p_err", "train_loss")}
                 for a, s in zip(progress.at_anneal, progress.states)]
    for name in at_anneal[0]:
        per_method[f"{name}_at_anneal"] = torch.cat([a[name] for a in at_anneal])
    metrics = {Metric(name, method, kappa=kappa): values[i].double().tolist()
               for name, values in per_method.items() for i, method in enumerate(config.methods)
               if not (method == "s" and "anneal" in name)}  # S never anneals
    return {Metric("matched_loss", kappa=kappa): [level] * own.shape[-1], **metrics}


def learning_order_flags(metrics: dict[Metric, list[float]], learned_err: float,
                         steps: int) -> dict[Metric, list[float]]:
    """Per seed, 1 when the order is the paper's, on the sustained learning iterations (censored at
    steps + 1): L-S has learned P (and still has it at the anneal) and not yet Q when it anneals
    (Lemmas 4.1-4.2), and learns Q after it within the run; S learns Q strictly before P
    (Lemma 5.2). NaN for a seed whose L-S never annealed."""
    flags = {}
    if Metric("anneal_iter", "ls") in metrics:
        anneal, p, q, w = (metrics[Metric(name, "ls")] for name in (
            "anneal_iter", "p_learned_iter", "q_learned_iter", "w_on_p_err_at_anneal"))
        flags[Metric("ls_p_before_q")] = [float(p_at <= a < q_at and w_at <= learned_err)
                                          if math.isfinite(a) else math.nan
                                          for a, p_at, q_at, w_at in zip(anneal, p, q, w)]
        flags[Metric("ls_q_after_anneal")] = [float(a < q_at <= steps) if math.isfinite(a) else math.nan
                                              for a, q_at in zip(anneal, q)]
    if Metric("q_learned_iter", "s") in metrics:
        flags[Metric("s_q_before_p")] = [float(q < p) for q, p in zip(metrics[Metric("q_learned_iter", "s")],
                                                                      metrics[Metric("p_learned_iter", "s")])]
    return flags


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


def simulate(ctx, config: TheoryConfig, partial: dict[str, Any] | None,
             kappa: float | None = None) -> dict[str, Any] | None:
    """One batched simulation as a unit of work: resumed from `partial`, logging every probe per
    seed and method (with `kappa` when given), a checkpoint after each probe. Returns the final
    progress as plain data, or None when it diverged (recorded in the run's problems)."""
    identity = {} if kappa is None else {"kappa": kappa}
    with _cpu_threads(ctx.device, config):
        sim = Simulation(config, ctx.seeds, ctx.device)
        progress = sim.start() if partial is None else Progress.from_plain(partial).to(ctx.device)

        def log(step: int, values: Probes, own: torch.Tensor) -> None:  # a run's own probes only
            for i, m in own.T.nonzero().tolist():
                ctx.log(seed=ctx.seeds[i], method=config.methods[m], **identity, step=step,
                        **{name: float(value[m, i]) for name, value in values.items()})

        with ctx.progress(config.steps, "iterations" if kappa is None else f"kappa {kappa:g}") as bar:
            bar.update(progress.step)
            try:
                progress = sim.run(progress, on_probe=log, on_step=bar.update,
                                   on_checkpoint=lambda p: ctx.checkpoint(p.to_plain()))
            except FloatingPointError as exc:
                ctx.diverged(str(exc) if kappa is None else f"kappa {kappa:g}: {exc}")
                return None
    return progress.to("cpu").to_plain()

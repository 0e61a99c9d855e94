"""Noisy full-batch gradient descent (eq. 3.1-3.3) and the schedules L-S, S, S + noise (Appendix F.1).

Every method and seed advances in one batched step: weights [M, S, k, f], a learning rate and a
pre-activation noise level per (method, seed) read from the phase each one is in. A method is
a piecewise schedule: phase k -> k + 1 at step `milestones[k]`; the first transition also fires
as soon as the train loss drops below eps1 + q log 2 (Algorithm 1's anneal rule, q the seed's
empirical Q-only fraction), and a run stops (its weights freeze) once it is in its last phase
with train loss below `stop_eps`. Both rules read the train loss of the step's own forward pass
(for S + noise, with its pre-activation noise while that is on).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from lrorder.theory import model
from lrorder.theory.data import Q_ONLY, Examples

NEVER = -1  # anneal_step / stop_step of a run that has not annealed / stopped


@dataclasses.dataclass(frozen=True)
class Method:
    """One schedule: per phase a learning rate (eq. 3.1) and a pre-activation noise std (eq. F.2)."""

    name: str
    lrs: tuple[float, ...]
    preact: tuple[float, ...]
    milestones: tuple[int, ...]
    anneal_eps: float | None = None
    stop_eps: float | None = None

    def __post_init__(self):
        if not len(self.lrs) == len(self.preact) == len(self.milestones) + 1:
            raise ValueError(f"{self.name}: need one lr and one noise level per phase")


def large_then_small(eta1: float, eta2: float, eps1: float, eps2: float, anneal_at: int) -> Method:
    """Algorithm 1 (L-S): eta1 until loss < eps1 + q log 2 (or step `anneal_at`), then eta2 until eps2."""
    return Method("ls", (eta1, eta2), (0.0, 0.0), (anneal_at,), eps1, eps2)


def small(eta2: float, eps2: float) -> Method:
    """Algorithm 2 (S): eta2 throughout, stop at eps2'."""
    return Method("s", (eta2,), (0.0,), (), None, eps2)


def small_with_noise(eta2: float, sigma: float, eps1: float, eps2: float, anneal_at: int) -> Method:
    """Appendix F.1: eta2 with pre-activation noise sigma, annealed to 0 by the rule of L-S."""
    return Method("s_noise", (eta2, eta2), (sigma, 0.0), (anneal_at,), eps1, eps2)


def stationary_tau_xi(tau0: float, eta1: float, lam: float) -> float:
    """tau_xi solving (1 - eta1 lam)^2 tau0^2 + eta1^2 tau_xi^2 = tau0^2 (Assumption 3.1, eq. 3.3)."""
    return tau0 * math.sqrt(1.0 - (1.0 - eta1 * lam) ** 2) / eta1


@dataclasses.dataclass
class State:
    """Everything a resumed run needs to continue exactly."""

    step: int
    weights: list[torch.Tensor]
    phase: torch.Tensor  # [M, S] long
    anneal_step: torch.Tensor  # [M, S] long, NEVER until the first transition
    stop_step: torch.Tensor  # [M, S] long, NEVER until stopped
    rng: torch.Tensor  # [S, ...] each seed's noise generator state
    signal: list[torch.Tensor]  # with `Trainer.split`: the accumulated gradients [M, S, k, f], else []


class Trainer:
    """The batched update of eq. 3.1 for `methods` x seeds on one training set.

    With `split` (a subset of the training examples), the state also accumulates Lemma 5.2's
    quantity for the first block, sum_s eta_s prod(1 - eta lambda) grad L, twice: from the
    examples of `split` and from all the others (`State.signal`, in that order).
    """

    def __init__(self, arch: model.Architecture, train: Examples, methods: list[Method], lam: float,
                 tau_xi: float, per_example_noise: bool, gens: list[torch.Generator],
                 split: model.Subset | None = None):
        self.arch, self.train, self.methods, self.split = arch, train, methods, split
        self.lam, self.tau_xi, self.per_example_noise, self.gens = lam, tau_xi, per_example_noise, gens
        self.buffers: dict = {}  # the hidden units of a step, rewritten in place by the next
        self.split_buffers: dict = {}  # likewise for the forward on `split`'s examples
        device = train.y.device
        phases = max(len(m.lrs) for m in methods)

        def table(values, dtype=torch.float32):  # [M, phases], a method's last value repeated
            padded = [v + (v[-1],) * (phases - len(v)) for v in values]
            return torch.tensor(padded, dtype=dtype, device=device)

        self.lr_table = table([m.lrs for m in methods])  # [M, phases]
        self.preact_table = table([m.preact for m in methods])
        big = 2**62
        self.milestones = table([m.milestones + (big,) for m in methods], torch.long)
        self.last_phase = torch.tensor([len(m.lrs) - 1 for m in methods], device=device)

        def column(values):  # [M, 1]; an unset threshold is never crossed
            return torch.tensor([-math.inf if v is None else v for v in values], device=device)[:, None]

        q_log2 = (train.kind == Q_ONLY).float().mean(-1) * math.log(2)  # [S]
        self.anneal_below = column([m.anneal_eps for m in methods]) + q_log2
        self.stop_below = column([m.stop_eps for m in methods])

    def start(self, weights: list[torch.Tensor]) -> State:
        shape = weights[0].shape[:2]
        never = torch.full(shape, NEVER, dtype=torch.long, device=weights[0].device)
        signal = [torch.zeros_like(weights[0]) for _ in range(2)] if self.split is not None else []
        return State(0, weights, torch.zeros_like(never), never.clone(), never.clone(), self._rng(), signal)

    def resume(self, state: State) -> None:
        """Continue every seed's noise stream where `state` was taken. A state taken on another
        kind of device (CPU and CUDA generators differ) cannot be continued: the stream goes on
        from a seed made of the seed's own and the step, reproducible but not the uninterrupted
        run's."""
        for gen, rng in zip(self.gens, state.rng):
            if rng.numel() == gen.get_state().numel():
                gen.set_state(rng.clone())  # a state of its own: set_state reads the storage from its start
            else:
                gen.manual_seed(gen.initial_seed() * 1_000_003 + state.step)

    def _rng(self) -> torch.Tensor:
        return torch.stack([gen.get_state() for gen in self.gens])

    def _randn(self, runs: int, *shape: int, device) -> torch.Tensor:
        """[runs, S, *shape] standard normals, seed s's from seed s's generator alone, so a seed's
        noise does not depend on which other seeds share the batch."""
        return torch.stack([torch.randn(runs, *shape, generator=gen, device=device) for gen in self.gens],
                           dim=1)

    def _per_run(self, table: torch.Tensor, state: State) -> torch.Tensor:
        """[M, S] value of `table` in each run's current phase; 0 once a run has stopped."""
        value = torch.gather(table, 1, state.phase)
        return torch.where(state.stop_step == NEVER, value, torch.zeros_like(value))

    def _preact_noise(self, state: State) -> list[torch.Tensor] | None:
        """Fresh Xi_t per step (eq. F.2): one value per neuron shared by all examples, or per example."""
        sigma = self._per_run(self.preact_table, state)
        if not bool((sigma > 0).any()):
            return None
        examples = self.train.y.shape[-1] if self.per_example_noise else 1
        return [sigma[..., None, None] * self._randn(sigma.shape[0], examples, block.width,
                                                     device=sigma.device)
                for block in self.arch.blocks]

    def _advance(self, state: State, loss: torch.Tensor) -> torch.Tensor:
        """Phase transitions and stops after seeing the train loss [M, S]; returns who annealed now."""
        running = state.stop_step == NEVER
        milestone = torch.gather(self.milestones, 1, state.phase.clamp(max=self.milestones.shape[1] - 1))
        by_loss = (state.phase == 0) & (loss < self.anneal_below)
        moves = running & (state.phase < self.last_phase[:, None]) & ((state.step >= milestone) | by_loss)
        first = moves & (state.anneal_step == NEVER)
        state.anneal_step[first] = state.step
        state.phase += moves.long()
        stops = running & (state.phase == self.last_phase[:, None]) & (loss < self.stop_below)
        state.stop_step[stops] = state.step
        return first

    def step(self, state: State, on_anneal=None) -> torch.Tensor:
        """One iteration of eq. 3.1 for every run; `on_anneal(state, mask)` sees the weights at which
        a run's first transition fired, before the update. Returns the train loss [M, S]."""
        noise = self._preact_noise(state)
        loss, grads = model.loss_and_grad(self.arch, state.weights, self.train, noise, self.buffers)
        if self.split is not None:
            inside = model.first_block_grad(self.arch, state.weights, loss, self.split, noise,
                                            self.split_buffers)
            split = (inside, grads[0] - inside)
        mean_loss = loss.mean(-1)
        annealed = self._advance(state, mean_loss)
        if on_anneal is not None and bool(annealed.any()):
            on_anneal(state, annealed)
        lr = self._per_run(self.lr_table, state)[..., None, None]
        if self.split is not None:
            for accumulated, grad in zip(state.signal, split):
                accumulated.mul_(1 - lr * self.lam).add_(lr * grad)
        for weight, grad in zip(state.weights, grads):
            xi = self.tau_xi * self._randn(weight.shape[0], *weight.shape[2:], device=weight.device)
            weight.mul_(1 - lr * self.lam).sub_(lr * (grad + xi))
        state.rng = self._rng()
        state.step += 1
        return mean_loss

"""What the paper says a network "has learned", measured along a run (Sections 4-5).

Every probe is a [M, S] tensor (method, seed) computed without pre-activation noise:
- train loss overall and per example type (P-only, Q-only, both: eq. 2.2-2.4);
- test error overall and per example type, on a fresh test set;
- `w_on_p_err`: the P part r(x) = f(x1, 0) alone on test examples that contain P ("has learned P");
- `v_on_q_err`: the Q part g(x) = f(0, x2) alone on test examples that contain Q ("has learned Q";
  0.25 when only the linearly fittable part of Q is learned, 0.5 at chance);
- the norm of each weight block and Lemma 4.2's |g(z + zeta) + g(z - zeta) - 2 g(z)|;
- with a `Mechanism`, Theorem 3.5's proof measured: the Frobenius norm of the first block's
  accumulated gradient (Lemma 5.2, eq. 5.1) from the examples that contain Q
  (`w_signal_from_q_examples`) and from the P-only ones (`w_signal_from_p_only`); the P part's
  mean margin y r(x) on the P-only training examples (`w_margin_p_only`) and the cosine between
  w* and the direction alpha of Lemma 5.3, r(x) - r(-x) = 2 <alpha, x> (`w_alignment`; exact for
  a bias-free ReLU net, where relu(a) - relu(-a) = a).
"""

from __future__ import annotations

import dataclasses

import torch

from lrorder.theory import model
from lrorder.theory.data import KINDS, Examples

BLOCK_NORM = {"x1": "w_norm", "x2": "v_norm", "x": "u_norm", "patches": "u_norm"}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of [M, S, n] values over the examples where `mask` [S, n] holds (NaN if none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1)


def mistakes(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0-1 error; a zero output counts as a mistake."""
    return (y * out <= 0).float()


def by_kind(name: str, suffix: str, values: torch.Tensor, ex: Examples) -> dict[str, torch.Tensor]:
    """`name`: the mean over all examples; `p_only_SUFFIX` etc.: the mean per example type."""
    per_kind = {f"{kind}_{suffix}": masked_mean(values, ex.kind == code) for kind, code in KINDS.items()}
    return {name: values.mean(-1), **per_kind}


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """What the Lemma 5.2-5.3 probes read: the P-only training examples, each seed's w* [S, d]
    and the inputs x1 = +-e_k (x2 = 0) that recover Lemma 5.3's alpha."""

    p_only: model.Subset
    w_star: torch.Tensor
    axes: Examples

    @classmethod
    def of(cls, train: Examples, w_star: torch.Tensor) -> Mechanism:
        seeds, d = w_star.shape
        eye = torch.eye(d, device=w_star.device)
        x1 = torch.cat([eye, -eye]).expand(seeds, -1, -1)
        zeros = torch.zeros(seeds, 2 * d, device=w_star.device)
        axes = Examples(x1=x1, alpha=zeros, ray=zeros.long(), y=zeros + 1, kind=zeros.long())
        return cls(model.Subset.where(train, train.kind == KINDS["p_only"]), w_star, axes)

    def probe(self, arch: model.Architecture, weights: list[torch.Tensor],
              signal: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        p_only = self.p_only.ex
        margin = masked_mean(p_only.y * model.output(arch, weights, p_only.with_x1_only()), self.p_only.valid)
        odd = model.output(arch, weights, self.axes)  # [M, S, 2d]
        d = self.w_star.shape[-1]
        alpha = (odd[..., :d] - odd[..., d:]) / 2
        values = {"w_margin_p_only": margin,
                  "w_alignment": torch.nn.functional.cosine_similarity(alpha, self.w_star, dim=-1)}
        if signal:  # a run resumed from before the signal was accumulated has none
            values["w_signal_from_p_only"], values["w_signal_from_q_examples"] = (
                s.flatten(2).norm(dim=-1) for s in signal)
        return values


@torch.no_grad()
def probe(arch: model.Architecture, weights: list[torch.Tensor], train: Examples,
          test: Examples, mechanism: Mechanism | None = None,
          signal: list[torch.Tensor] = ()) -> dict[str, torch.Tensor]:
    """All probes for every method and seed (module docstring)."""
    train_loss = model.logistic(model.output(arch, weights, train), train.y)
    test_err = mistakes(model.output(arch, weights, test), test.y)
    r, g = model.parts(arch, weights, test)
    values = {
        **by_kind("train_loss", "train_loss", train_loss, train),
        **by_kind("test_err", "err", test_err, test),
        "w_on_p_err": masked_mean(mistakes(r, test.y), test.has_p()),
        "v_on_q_err": masked_mean(mistakes(g, test.y), test.has_q()),
        "lemma42": model.lemma42(arch, weights),
    }
    for block, weight in zip(arch.blocks, weights):
        values[BLOCK_NORM[block.sees]] = weight.flatten(2).norm(dim=-1)
    if mechanism is not None:
        values.update(mechanism.probe(arch, weights, list(signal)))
    return values

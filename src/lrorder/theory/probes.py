"""What the paper says a network "has learned", measured along a run (Sections 4-5).

Every probe is a [M, S] tensor (method, seed) computed without pre-activation noise:
- train loss overall and per example type (P-only, Q-only, both: eq. 2.2-2.4);
- test error overall and per example type, on a fresh test set;
- `w_on_p_err`: the P part r(x) = f(x1, 0) alone on test examples that contain P ("has learned P");
- `v_on_q_err`: the Q part g(x) = f(0, x2) alone on test examples that contain Q ("has learned Q";
  0.25 when only the linearly fittable part of Q is learned, 0.5 at chance);
- the norm of each weight block and Lemma 4.2's |g(z + zeta) + g(z - zeta) - 2 g(z)|.
"""

from __future__ import annotations

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


@torch.no_grad()
def probe(arch: model.Architecture, weights: list[torch.Tensor], train: Examples,
          test: Examples) -> dict[str, torch.Tensor]:
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
    return values

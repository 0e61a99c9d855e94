"""Readings at matched train loss (core.matched) and the theory runs' use of them: hand-made
trajectories with the answers worked out by hand."""

import math

import numpy as np
import pytest
import torch

from lrorder.core import matched
from lrorder.theory import experiment

NAN = math.nan
# two runs (columns), five probes: run 0 falls fast and bounces back, run 1 falls slowly and
# skips a probe (NaN: a probe it did not own)
LOSS = np.array([[0.69, 0.69], [0.40, 0.60], [0.50, NAN], [0.20, 0.45], [0.30, 0.35]])
ERROR = np.array([[0.5, 0.5], [0.3, 0.4], [0.35, 0.0], [0.1, 0.2], [0.2, 0.15]])


def test_a_run_is_read_at_its_first_probe_at_or_below_the_level():
    np.testing.assert_array_equal(matched.first_at_or_below(LOSS, ERROR, 0.45), [0.3, 0.2])
    np.testing.assert_array_equal(matched.first_at_or_below(LOSS, ERROR, 0.40), [0.3, 0.15])  # "at": equal
    np.testing.assert_array_equal(matched.first_at_or_below(LOSS, ERROR, [0.69, 0.3, 0.1]),
                                  [[0.5, 0.5], [0.1, NAN], [NAN, NAN]])  # never: NaN


def test_the_matched_loss_is_the_lowest_level_every_run_reaches():
    assert matched.matched_loss(LOSS) == 0.35  # run 1's lowest; run 0 went lower (0.20)
    levels = matched.loss_levels(LOSS, 3)
    np.testing.assert_allclose(levels, [0.69, math.sqrt(0.69 * 0.2), 0.2])


def test_a_theory_run_is_read_on_its_own_probes_only():
    """A probe another run owned (the loss there would reach the level earlier) is not read."""
    history = {"train_loss": torch.tensor(LOSS).nan_to_num(0.1)[:, None, :],  # [P, M=1, S=2]
               "p_only_err": torch.tensor(ERROR)[:, None, :], "test_err": torch.tensor(ERROR)[:, None, :] / 2}
    own = torch.tensor(~np.isnan(LOSS))[:, None, :]
    level, readings = experiment.at_matched_loss([0, 10, 15, 20, 30], history, own)
    assert level == pytest.approx(0.35)
    expected = {"p_only_err": [0.1, 0.15], "test_err": [0.05, 0.075], "iter": [20.0, 30.0]}
    for name, values in expected.items():  # run 1's NaN probe (0.1 in the history) is not its own
        torch.testing.assert_close(readings[f"{name}_at_matched_loss"],
                                   torch.tensor([values], dtype=torch.float64))

"""The patch rule of Section H.2 as the released code applies it, and the on-device image sets."""

import numpy as np
import pytest
import torch

from lrorder.vision.loader import ImageSet
from lrorder.vision.patch import SIZE, PatchRule, patch_start, patchable_mask

N = 4000
CENTRE = (slice(None), slice(None), slice(12, 19), slice(12, 19))


def images(n=N, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    return ImageSet.from_arrays("clean", x, rng.integers(0, 10, n), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3),
                                "cpu", **kwargs)


def patched(seed=0):
    generator = torch.Generator().manual_seed(seed)
    rule = PatchRule.draw(3, 10, generator)
    clean = images()
    return clean, clean.with_patch("mixed", rule, patchable_mask(N, generator)), rule


def whole_pass(image_set, seed=1):
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(image_set.size)
    return image_set.batch(index, generator)


def test_patch_sits_at_the_centre_rows_and_columns_12_to_18():
    assert patch_start(32) == 12 and SIZE == 7 and patch_start(28) == 10


def test_patterns_have_the_papers_scales():
    rule = PatchRule.draw(3, 10, torch.Generator().manual_seed(0))
    assert rule.z.shape == (3, 7, 7) and rule.zeta.shape == (10, 3, 7, 7)
    assert rule.z.std().item() == pytest.approx(1.25, rel=0.15)
    assert rule.zeta.abs().max().item() <= 0.1 and rule.zeta.abs().max().item() > 0.09


def test_a_fixed_80_percent_is_patchable():
    mask = patchable_mask(50_000, torch.Generator().manual_seed(0))
    assert mask.sum().item() == 40_000
    again = patchable_mask(50_000, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_fractions_replaced_pixels_and_untouched_clean_images():
    clean, mixed, rule = patched()
    x_clean, y = whole_pass(clean)
    x, y_mixed = whole_pass(mixed)
    assert torch.equal(y, y_mixed)
    centre_changed = (x[CENTRE] != x_clean[CENTRE]).flatten(1).any(1)
    outside = x.clone()
    outside[CENTRE] = 0
    reference = x_clean.clone()
    reference[CENTRE] = 0
    zeroed = (outside == 0).flatten(1).all(1)
    untouched = (x == x_clean).flatten(1).all(1)
    only, mix = zeroed & centre_changed, ~zeroed & centre_changed
    patchable = mixed.patchable
    # the 20% never-patchable images are exactly the clean ones
    assert torch.equal(untouched, ~patchable)
    assert only.float().mean().item() == pytest.approx(0.16, abs=0.02)
    assert mix.float().mean().item() == pytest.approx(0.64, abs=0.02)
    # mixed: outside the patch the image is the clean one; the centre is REPLACED by z +- zeta_y
    assert torch.equal(outside[mix], reference[mix])
    expected = rule.z + rule.zeta[y]
    centre = x[CENTRE]
    plus = torch.isclose(centre, expected).flatten(1).all(1)
    minus = torch.isclose(centre, 2 * rule.z - expected).flatten(1).all(1)
    assert torch.all((plus | minus)[mix])
    assert (plus & mix).float().sum() / mix.sum() == pytest.approx(0.5, abs=0.05)
    # patch-only: centre = z + c zeta_y with c = s 1.75 a, so c is uniform on [-1.75, 1.75]
    offset, zeta = (centre - rule.z).flatten(1)[only], rule.zeta[y].flatten(1)[only]
    c = (offset * zeta).sum(1) / (zeta * zeta).sum(1)
    assert torch.allclose(offset, c[:, None] * zeta, atol=1e-5)
    assert c.abs().max().item() <= 1.75 and c.abs().mean().item() == pytest.approx(1.75 / 2, abs=0.1)


def test_mixed_set_is_redrawn_at_each_load_and_deterministic_given_the_seed():
    _, mixed, _ = patched()
    first, _ = whole_pass(mixed, seed=1)
    second, _ = whole_pass(mixed, seed=2)
    assert not torch.equal(first, second)
    assert torch.equal(first, whole_pass(mixed, seed=1)[0])
    assert torch.equal(first, whole_pass(patched()[1], seed=1)[0])


def test_patch_only_set_is_zero_outside_the_centre():
    _, mixed, rule = patched()
    only = ImageSet.blank("patch", mixed, 1000)
    x, y = whole_pass(only)
    assert x.shape == (1000, 3, 32, 32) and y.min() >= 0 and y.max() <= 9
    outside = x.clone()
    outside[CENTRE] = 0
    assert torch.all(outside == 0)
    assert (x[CENTRE] != 0).flatten(1).any(1).all()
    assert np.bincount(y.numpy(), minlength=10).min() > 50  # labels drawn uniformly


def test_an_epoch_visits_every_image_once_and_keeps_the_last_partial_batch():
    clean = images(n=300)
    generator = torch.Generator().manual_seed(0)
    batches = list(clean.batches(128, generator, shuffle=True))
    assert [len(y) for _, y in batches] == [128, 128, 44] and clean.steps(128) == 3
    seen = torch.cat([x for x, _ in batches])
    full, _ = clean.batch(torch.arange(300), generator)
    # same images, in a new order: compare the sorted per-image sums
    assert torch.allclose(seen.sum((1, 2, 3)).sort().values, full.sum((1, 2, 3)).sort().values, atol=1e-3)


def test_normalisation_is_per_channel_on_the_uint8_pixels():
    clean = images(n=10)
    x, _ = clean.batch(torch.arange(10), torch.Generator())
    raw = torch.from_numpy(np.asarray(clean.pixels)).float() / 255
    expected = (raw - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(
        1, 3, 1, 1)
    assert clean.pixels.dtype == torch.uint8 and torch.allclose(x, expected, atol=1e-6)

"""Backgrounds: field-star counts and galaxy light follow the model; hard negatives; real-image patches."""

import math

import numpy as np
import pytest
import torch

from simulators.background import (
    ClusterScene,
    EmptyBackground,
    ImageBackground,
    ImagePatchBackground,
    SyntheticField,
    SyntheticFieldBackground,
    background_from_option,
)
from simulators.errors import SimulatorError
from simulators.instruments import get_preset
from simulators.noise import NoiseModel
from simulators.population import StellarPopulation


@pytest.fixture(scope="module")
def population():
    return StellarPopulation(get_preset("m83-wfc3").bands)


@pytest.fixture(scope="module")
def field(population):
    inst = get_preset("m83-wfc3")
    return SyntheticField(inst, population, canvas_margin=8, library_size=2048)


def test_field_star_counts_are_poisson_with_the_model_mean(field):
    sfr = torch.full((400,), 0.02)
    _, n = field.stars(sfr, torch.Generator().manual_seed(0))
    lam = 0.02 * field.stars_per_sfr
    assert 20 < lam < 5000  # a disk field: tens to thousands of resolved stars per cutout
    assert float(n.float().mean()) == pytest.approx(lam, rel=4 / math.sqrt(400 * lam) + 1e-3)
    assert float(n.float().var()) == pytest.approx(lam, rel=0.25)


def test_field_stars_are_uniform_and_library_is_physical(field):
    stars, n = field.stars(torch.full((50,), 0.03), torch.Generator().manual_seed(1))
    inside = (stars.y >= -0.5) & (stars.y < 63.5) & (stars.x >= -0.5) & (stars.x < 63.5)
    area_ratio = 64**2 / 80**2
    assert float(inside.float().mean()) == pytest.approx(area_ratio, abs=0.03)
    # every library star is brighter than the preset's limit in the reddest band before field extinction:
    # with A_V <= 1 (A_F814W < 0.7 mag) none is fainter than limit + 0.7 mag
    inst = field.instrument
    mag = inst.zero_points[-1] - 2.5 * torch.log10(field.library_flux[:, -1])
    assert float(mag.max()) < inst.field_mag_limit + 0.75


def test_galaxy_light_level_matches_surface_brightness(field):
    inst = field.instrument
    sfr = torch.full((200,), inst.galaxy_sfr_reference)
    img = field.galaxy_light(sfr, torch.Generator().manual_seed(2))
    for c, b in enumerate(inst.band_setups):
        expect = 10 ** (-0.4 * (b.galaxy_sb - b.zero_point)) * inst.pixel_scale**2
        assert float(img[:, c].mean()) == pytest.approx(
            expect, rel=1e-3
        )  # the gradient averages out
        assert float(img[:, c].min()) >= 0.74 * expect


def test_hard_negatives(field):
    kind = torch.tensor([0, 1, 2, 2, 1])
    centre = torch.full((5, 2), 31.5)
    stars = field.hard_negatives(kind, centre, torch.Generator().manual_seed(3))
    counts = torch.bincount(stars.sample_index, minlength=5)
    assert counts[0] == 0 and counts[2] == 1 and counts[3] == 1 and 3 <= counts[1] <= 8
    single = stars.sample_index == 2
    assert float((stars.y[single] - 31.5).abs().max()) < 2.0
    # a single bright star is from the brightest 5 % of the field library
    assert float(stars.flux[single, -1].min()) >= float(
        field.library_flux[int(0.05 * len(field.library_flux)), -1]
    )


def test_image_background_patches_avoid_and_fill_nans(tmp_path):
    from astropy.io import fits

    rng = np.random.default_rng(0)
    cube = rng.normal(1.0, 0.1, (3, 100, 120)).astype(np.float32)
    cube[:, :60, :] = np.nan  # top 60 rows masked: only rows 60-99 can host a 32-px patch
    cube[1, 80, 80] = np.nan  # an isolated NaN that accepted patches must fill
    fits.writeto(tmp_path / "field.fits", cube)
    bg = ImageBackground(tmp_path / "field.fits", 32, 3, max_nan_fraction=0.01)
    p = bg.sample(64, torch.Generator().manual_seed(0))
    assert p.shape == (64, 3, 32, 32) and torch.isfinite(p).all()
    assert float((p - 1.0).abs().max()) < 1.0  # only real pixel values (and band medians)
    with pytest.raises(SimulatorError, match="expected a"):
        ImageBackground(tmp_path / "field.fits", 32, 4)
    fits.writeto(tmp_path / "masked.fits", np.full((3, 40, 40), np.nan, dtype=np.float32))
    with pytest.raises(SimulatorError, match="mostly masked"):
        ImageBackground(tmp_path / "masked.fits", 32, 3).sample(2, torch.Generator().manual_seed(0))


class _Scene:
    """A ClusterScene whose render records the extra stars it was given (a flat cluster light)."""

    def __init__(self, n, label, size=64):
        self.calls = []
        self.scene = ClusterScene(n, label, torch.full((n, 2), (size - 1) / 2), self._render)
        self.size = size

    def _render(self, extra):
        self.calls.append(list(extra))
        return torch.full((self.scene.n, 3, self.size, self.size), 0.25)


def test_each_background_option_builds_its_class_and_composes_one_render(population, tmp_path):
    from astropy.io import fits

    inst = get_preset("m83-wfc3")
    noise = NoiseModel.from_instrument(inst)
    fits.writeto(tmp_path / "bg.fits", np.full((3, 70, 70), 0.5, dtype=np.float32))
    common = dict(
        instrument=inst,
        population=population,
        canvas_margin=8,
        hard_negative_fraction=1.0,
        field_library_size=256,
        field_seed=0,
    )
    label = torch.tensor([1, 0, 0, 1])
    g = torch.Generator().manual_seed(0)
    # no background, no noise: the clusters alone, nothing drawn
    empty = background_from_option("none", noise=None, **common)
    assert isinstance(empty, EmptyBackground)
    s = _Scene(4, label)
    out = empty.compose(s.scene, g, torch.Generator().manual_seed(1))
    assert s.calls == [[]] and torch.equal(out.images, out.scene)
    assert torch.equal(out.images, torch.full((4, 3, 64, 64), 0.25))
    assert list(out.nuisances) == ["hard_negative"] and not out.nuisances["hard_negative"].any()
    # real patches: patch + clusters; the variance scene clips the patch at 0
    patches = background_from_option(str(tmp_path / "bg.fits"), noise=None, **common)
    assert isinstance(patches, ImagePatchBackground) and patches.option.endswith("bg.fits")
    out = patches.compose(_Scene(4, label).scene, g, torch.Generator().manual_seed(1))
    assert torch.equal(out.images, torch.full((4, 3, 64, 64), 0.75))
    # the synthetic field renders its field stars and hard negatives with the clusters, adds noise
    synth = background_from_option("synthetic", noise=noise, **common)
    assert isinstance(synth, SyntheticFieldBackground) and synth.field.library_flux.shape[0] == 256
    s = _Scene(4, label)
    out = synth.compose(s.scene, torch.Generator().manual_seed(2), torch.Generator().manual_seed(3))
    assert len(s.calls) == 1 and len(s.calls[0]) == 2  # field stars, hard negatives
    field_stars, hard = s.calls[0]
    assert torch.equal(
        torch.bincount(field_stars.sample_index, minlength=4).float(),
        out.nuisances["n_field_stars"],
    )
    # hard_negative_fraction = 1: every background-only sample gets one, no cluster does
    kinds = out.nuisances["hard_negative"]
    assert bool((kinds[label == 0] > 0).all()) and not kinds[label == 1].any()
    assert set(hard.sample_index.tolist()) == {1, 2}
    assert list(out.nuisances) == ["field_sfr_density", "n_field_stars", "hard_negative"]
    assert not torch.equal(out.images, out.scene)  # noisy
    assert bool((out.scene > 0.25).all())  # galaxy light on top of the clusters everywhere

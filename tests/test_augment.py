"""Symmetry augmentation of training batches: the premise (the cluster simulator is unchanged in
distribution by the square's rotations and mirror images), the views drawn, their determinism
and process shares, resuming, and the command's refusals."""

import math

import pytest
import torch
from scipy import stats

from sbicluster.inference import symmetric_view
from sbicluster.training import SymmetryAugmented, TrainingConfig, train
from sbicluster.training.config import upgrade_config_dict
from simulators.batch import SimulationBatch
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error, run_main


class BankSource:
    """Consecutive slices of a fixed bank of random cutouts (a deterministic stand-in for a pool);
    with ``world_size > 1`` each call returns this ``rank``'s share of the global slice, as the
    pool reader does."""

    def __init__(self, n=4096, shape=(3, 6, 6), seed=0, rank=0, world_size=1):
        g = torch.Generator().manual_seed(seed)
        self.theta = torch.rand(n, 4, generator=g)
        self.images = torch.randn(n, *shape, generator=g)
        self.label = torch.randint(2, (n,), generator=g)
        self.visibility = torch.rand(n, generator=g)
        self.pos, self.rank, self.world_size = 0, rank, world_size

    def _rows(self, rows):
        nuisances = {"offset_x": self.theta[rows, 0], "feh": self.theta[rows, 1]}
        return SimulationBatch(
            self.theta[rows], self.images[rows], self.label[rows], self.visibility[rows], nuisances
        )

    def next(self, n):
        rows = torch.arange(self.pos, self.pos + n) % len(self.theta)
        self.pos += n
        return self._rows(rows[self.rank :: self.world_size])

    def validation(self):
        return self._rows(torch.arange(8))

    def state(self):
        return {"disk.pos": torch.tensor([self.pos])}

    def load_state(self, tensors):
        self.pos = int(tensors["disk.pos"][0])

    def close(self):
        pass


def _view_of(augmented, original):
    """Index of the view of ``original`` (C, H, W) that ``augmented`` is, or None."""
    for index in range(8):
        if torch.equal(symmetric_view(original[None], index)[0], augmented):
            return index
    return None


def test_every_cutout_is_one_of_the_allowed_views_drawn_uniformly_with_its_truth_unchanged():
    source, reference = BankSource(), BankSource()
    augmented = SymmetryAugmented(source, views=8, seed=1)
    counts = torch.zeros(8)
    for _ in range(16):
        out, plain = augmented.next(256), reference.next(256)
        for key in ("theta", "label", "visibility"):
            assert torch.equal(getattr(out, key), getattr(plain, key))
        for a, b in zip(out.images, plain.images, strict=True):
            index = _view_of(a, b)
            assert index is not None
            counts[index] += 1
    # 4,096 draws over 8 views: uniform (chi-square), and every view used
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3 and (counts > 400).all()

    two = SymmetryAugmented(BankSource(), views=2, seed=1)
    out, plain = two.next(512), BankSource().next(512)
    seen = {_view_of(a, b) for a, b in zip(out.images, plain.images, strict=True)}
    assert seen == {0, 1}  # the identity and the 180° rotation only


def test_positions_are_dropped_other_nuisances_kept_and_validation_is_as_simulated():
    source = BankSource()
    augmented = SymmetryAugmented(source, views=8, seed=2)
    out = augmented.next(64)
    assert "offset_x" not in out.nuisances
    assert torch.equal(out.nuisances["feh"], BankSource().next(64).nuisances["feh"])
    assert torch.equal(augmented.validation().images, source.validation().images)


def test_views_follow_the_seed_and_a_saved_state_continues_the_stream():
    a = SymmetryAugmented(BankSource(), views=8, seed=3)
    b = SymmetryAugmented(BankSource(), views=8, seed=3)
    other = SymmetryAugmented(BankSource(), views=8, seed=4)
    first = a.next(128).images
    assert torch.equal(first, b.next(128).images)
    assert not torch.equal(first, other.next(128).images)
    saved = a.state()
    assert set(saved) == {"disk.pos", "rng.augment"}
    expected = [a.next(128).images for _ in range(3)]
    resumed = SymmetryAugmented(BankSource(), views=8, seed=99)
    resumed.load_state(saved)
    for want in expected:
        assert torch.equal(resumed.next(128).images, want)


def test_process_shares_partition_the_one_process_batch():
    single = SymmetryAugmented(BankSource(), views=8, seed=5).next(100).images
    shares = [
        SymmetryAugmented(BankSource(rank=r, world_size=2), views=8, seed=5).next(100).images
        for r in (0, 1)
    ]
    assert torch.equal(shares[0], single[0::2]) and torch.equal(shares[1], single[1::2])


def test_cluster_simulator_is_unchanged_in_distribution_by_every_view():
    """The premise of augmentation. The mean of 600 bright clusters (fixed θ, random stars, offsets,
    noise and field) equals each of its 7 other views pixel by pixel within the sampling noise,
    while a one-pixel shift of the same cutouts is caught, so the check has power."""
    from simulators.cluster import ClusterSimulator
    from simulators.population import StellarPopulation

    sim = ClusterSimulator(
        "m83-wfc3",
        population=StellarPopulation(("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W")),
    )
    n = 600
    theta = torch.tensor([[7.5, 4.5, math.log10(3.0), 0.3]] * n)
    images = sim.simulate(
        n, torch.Generator().manual_seed(11), theta=theta, label=torch.ones(n)
    ).images
    centre = images[..., 20:44, 20:44]  # the cluster's light; (3, 24, 24) pixels per view

    def worst_z(cutouts):
        worst = 0.0
        for index in range(1, 8):
            diff = cutouts - symmetric_view(cutouts, index)
            z = diff.mean(0) / (diff.std(0) / math.sqrt(n) + 1e-12)
            worst = max(worst, float(z.abs().max()))
        return worst

    # 7 views × 1,728 pixels: an exactly symmetric distribution exceeds |z| = 5.5 with p ≈ 5e-4
    assert worst_z(centre) < 5.5
    assert worst_z(torch.roll(images, 1, dims=-1)[..., 20:44, 20:44]) > 10


def _toy_config(**kw):
    base = {
        "embedding": "small",
        "embedding_overrides": {"width": 8, "blocks": [1], "features": 16},
        "flow_overrides": {"hidden_features": 32, "num_transforms": 2},
        "steps": 24,
        "batch_size": 32,
        "val_size": 64,
        "val_every": 8,
        "checkpoint_every": 8,
        "seed": 3,
        "softening": [20.0, 20.0],
        "augment_views": 8,
    }
    base.update(kw)
    return TrainingConfig(**base)


def test_augmented_training_resumes_exactly_and_differs_from_plain_training(tmp_path):
    toy = LinearGaussianToy()
    straight = train(toy, _toy_config(), tmp_path / "a", progress=False)
    train(toy, _toy_config(), tmp_path / "b", progress=False, stop_after_steps=10)
    resumed = train(toy, _toy_config(), tmp_path / "b", resume=True, progress=False)
    plain = train(toy, _toy_config(augment_views=1), tmp_path / "c", progress=False)
    for (key, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    assert not all(
        torch.equal(a, c)
        for a, c in zip(straight.state_dict().values(), plain.state_dict().values(), strict=True)
    )
    assert straight.card["training"]["config"]["augment_views"] == 8


def test_configurations_recorded_before_augmentation_read_as_unaugmented():
    assert upgrade_config_dict({"embedding": "cpu"})["augment_views"] == 1
    assert TrainingConfig().augment_views == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--preset", "toy", "--augment-views", "3"], "--augment-views must be one of"),
        (["--preset", "toy", "--augment-views", "0"], "--augment-views must be one of"),
        (["--preset", "legus-uvis", "--augment-views", "8"], "are not images"),
    ],
)
def test_train_refuses_views_it_cannot_apply_before_any_work(capsys, tmp_path, args, fragment):
    out = tmp_path / "run"
    run = run_main(capsys, "train", *args, "--steps", 2, "--pool", 2000, "--out", out)
    assert_one_line_error(run, fragment)
    assert not out.exists()

"""L-C2ST at individual observations, on a conjugate Gaussian problem with a known posterior."""

import numpy as np
import pytest
import torch

from sbicluster.diagnostics.local import exact_posterior_fractions, local_c2st, probe_indices

NOISE = 0.5
D = 2


class _GaussianPosteriorModel(torch.nn.Module):
    """x = θ + NOISE·ε, θ ~ N(0, I): posterior N(x / (1 + NOISE²), NOISE² / (1 + NOISE²)),
    its width multiplied by ``scale`` (1: exact). Features are the observation itself."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    def _moments(self, x):
        return x / (1 + NOISE**2), self.scale * NOISE / np.sqrt(1 + NOISE**2)

    def sample_from_features(self, x, num_samples, generator=None):
        mean, sd = self._moments(x)
        eps = torch.randn((num_samples, *x.shape), generator=generator)
        return mean + sd * eps

    def flow(self, x):
        mean, sd = self._moments(x)

        class _Flow:
            @staticmethod
            def transform(theta):
                return (theta - mean) / sd

        return _Flow()


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, D)).astype(np.float32)
    x = theta + NOISE * rng.standard_normal((n, D)).astype(np.float32)
    visibility = 10 ** rng.uniform(0, 3, n)
    return theta, torch.as_tensor(x).reshape(n, D, 1, 1), visibility


def test_probes_are_spread_over_visibility():
    vis = np.array([5.0, 1.0, 300.0, 20.0, 2.0, 90.0])
    idx = probe_indices(vis, 3)
    assert list(vis[idx]) == [1.0, 5.0, 300.0] or list(vis[idx]) == [1.0, 20.0, 300.0]
    assert np.all(np.diff(vis[idx]) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("scale, exact", [(1.0, True), (0.5, False)])
def test_exact_posterior_is_not_rejected_and_a_too_narrow_one_is(scale, exact, members):
    """With one classifier or an ensemble (the level is kept, and so is the power)."""
    theta, images, visibility = _data(1200, seed=3)
    probe = np.zeros(len(theta), bool)
    probe[probe_indices(visibility, 20)] = True
    result = local_c2st(
        _GaussianPosteriorModel(scale),
        theta,
        images,
        probe,
        visibility,
        seed=1,
        num_null=20,
        num_eval=500,
        num_ensemble=members,
        pp_probes=2,
    )
    assert result["n_probes"] == 20 and result["n_calibration"] == 1180
    assert result["num_ensemble"] == members
    if exact:
        assert result["fraction_not_rejected"] >= 0.8  # 0.95 expected at α = 0.05
    elif members > 1:
        assert result["fraction_not_rejected"] <= 0.2
    # One classifier judges every probe, so its chance fit moves all verdicts together and the
    # fraction alone depends on the machine's float arithmetic (≤ 0.2 on an AVX-512 host, 0.6 on
    # an AVX2 one for this seed); where it falls among the exact-posterior replays does not.
    assert len(result["pp"]) == 2 and result["pp"][0]["probs_null"].shape == (20, 500)
    exact_replay = result["exact_posterior"]
    assert exact_replay["replicates"] == 21 and len(exact_replay["fractions"]) == 21
    assert exact_replay["mean"] >= 0.8  # 20/21 expected
    if not exact:  # far below what an exact posterior scores on the same probes
        assert exact_replay["share_at_or_below"] <= 0.1


def test_result_does_not_depend_on_numpy_global_random_state():
    """Same seed, same inputs: same statistics and p-values whatever numpy's global generator
    holds (the classifiers trained under the null are seeded too, not only the observed one)."""
    theta, images, visibility = _data(200, seed=5)
    probe = np.zeros(len(theta), bool)
    probe[probe_indices(visibility, 4)] = True
    runs = []
    saved = np.random.get_state()  # noqa: NPY002 -- the legacy global state is what is tested
    for global_seed in (0, 1):
        np.random.seed(global_seed)  # noqa: NPY002
        result = local_c2st(
            _GaussianPosteriorModel(0.8),
            theta,
            images,
            probe,
            visibility,
            seed=2,
            num_null=4,
            num_eval=100,
            pp_probes=1,
        )
        runs.append(result)
    np.random.set_state(saved)  # noqa: NPY002
    assert runs[0]["probes"] == runs[1]["probes"]
    assert runs[0]["exact_posterior"] == runs[1]["exact_posterior"]
    assert runs[0]["exact_posterior"]["replicates"] == 5  # num_null + 1
    np.testing.assert_array_equal(runs[0]["pp"][0]["probs_null"], runs[1]["pp"][0]["probs_null"])


def test_an_ensemble_averages_away_part_of_each_classifiers_chance_fit():
    """Under the null every classifier's departure from 0.5 is chance; the mean of several
    departs less, so the null statistics (mean squared departure) shrink."""
    theta, images, visibility = _data(300, seed=7)
    probe = np.zeros(len(theta), bool)
    probe[probe_indices(visibility, 3)] = True
    null_spread = {}
    for members in (1, 4):
        result = local_c2st(
            _GaussianPosteriorModel(1.0),
            theta,
            images,
            probe,
            visibility,
            seed=3,
            num_null=4,
            num_eval=200,
            num_ensemble=members,
            pp_probes=3,
        )
        assert result["num_ensemble"] == members
        null_spread[members] = np.mean(
            [np.mean((pp["probs_null"] - 0.5) ** 2) for pp in result["pp"]]
        )
    assert null_spread[4] < 0.7 * null_spread[1]


@pytest.mark.parametrize("members", [0, -1, 1.5, True])
def test_an_ensemble_needs_a_positive_whole_number_of_classifiers(members):
    theta, images, visibility = _data(120, seed=1)
    probe = np.zeros(len(theta), bool)
    probe[:2] = True
    with pytest.raises(ValueError, match="num_ensemble"):
        local_c2st(
            _GaussianPosteriorModel(1.0), theta, images, probe, visibility, num_ensemble=members
        )


def test_replayed_null_classifiers_reject_at_the_tests_level_when_independent():
    """Exchangeable, independent statistics: classifier k is rejected at a probe when it beats
    all K − 1 rivals, with probability 1/K, so the fractions average 1 − 1/K."""
    rng = np.random.default_rng(11)
    probes, classifiers = 400, 21
    replay = rng.standard_normal((probes, classifiers))
    rivals = rng.standard_normal((probes, classifiers))
    fractions = exact_posterior_fractions(replay, rivals, alpha=0.05)
    assert fractions.shape == (classifiers,)
    assert fractions.mean() == pytest.approx(1 - 1 / classifiers, abs=0.01)


def test_one_classifier_that_fits_more_everywhere_fails_most_probes_at_once():
    """The correlation the replay exists to show: a classifier whose chance fit is larger at
    every probe is rejected at most of them, the others at none."""
    rng = np.random.default_rng(12)
    probes, classifiers = 50, 21
    replay = rng.uniform(0.0, 1.0, (probes, classifiers))
    rivals = rng.uniform(0.0, 1.0, (probes, classifiers))
    replay[:, 3] += 0.99  # classifier 3 scores above nearly every rival at every probe
    fractions = exact_posterior_fractions(replay, rivals, alpha=0.05)
    assert fractions[3] < 0.3
    assert np.delete(fractions, 3).mean() > 0.9


@pytest.mark.parametrize(
    "shapes", [((4, 3), (4, 2)), ((4,), (4,)), ((4, 1), (4, 1)), ((2, 3, 1), (2, 3, 1))]
)
def test_replay_refuses_arrays_that_are_not_probes_by_classifiers(shapes):
    replay, rivals = (np.zeros(shape) for shape in shapes)
    with pytest.raises(ValueError, match="probes, classifiers"):
        exact_posterior_fractions(replay, rivals, alpha=0.05)

"""The diagnostics reduced chunk by chunk: same statistics as in one go, memory bounded in n.

``run_diagnostics`` keeps a few numbers per held-out object (``DrawStatistics``) instead of the
cutouts and the N × S posterior draws. These tests check that the per-object reduction is
exact (chunked = one chunk, TARP = sbi's), that the report does not depend on the chunk size,
and that the driver never holds more than one chunk of draws.
"""

import tracemalloc

import numpy as np
import pytest
import torch

from sbicluster.diagnostics.objects import DrawStatistics, draw_statistics
from sbicluster.diagnostics.report import to_jsonable
from sbicluster.diagnostics.run import (
    DRAW_BLOCK,
    evaluate,
    evaluate_statistics,
    run_diagnostics,
    tarp,
    truth_box_references,
)
from simulators.priors import DEFAULT_PRIOR
from simulators.toy import LinearGaussianToy

N, S, D = 300, 120, 4


def _gaussian_draws(seed: int = 0, scale: float = 1.0):
    """Exact (scale 1) or too narrow posterior of θ ~ N(0, I), x = θ + 0.5 ε: truths, draws and
    log densities."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((N, D))
    x = theta + 0.5 * rng.standard_normal((N, D))
    mean, sd = x / 1.25, scale * np.sqrt(0.25 / 1.25)
    samples = mean[:, None, :] + sd * rng.standard_normal((N, S, D))

    def logq(t):
        return -0.5 * (((t - mean[:, None, :]) / sd) ** 2).sum(-1)

    return theta, samples, logq(theta[:, None])[:, 0], logq(samples)


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in to_jsonable(metrics).items() if k != "timing"}


def test_statistics_of_chunks_equal_those_of_one_chunk():
    theta, samples, lp_true, lp_samp = _gaussian_draws()
    references, box = truth_box_references(theta, seed=4)
    whole = draw_statistics(
        theta,
        samples,
        log_prob_true=lp_true,
        log_prob_samples=lp_samp,
        tie_rng=np.random.default_rng(1),
        tarp_references=references,
        tarp_box=box,
    )
    tie_rng = np.random.default_rng(1)  # consumed chunk after chunk, one uniform per object
    parts = [
        draw_statistics(
            theta[sl],
            samples[sl],
            log_prob_true=lp_true[sl],
            log_prob_samples=lp_samp[sl],
            tie_rng=tie_rng,
            tarp_references=references[sl],
            tarp_box=box,
        )
        for sl in (slice(0, 7), slice(7, 130), slice(130, N))
    ]
    chunked = DrawStatistics.concatenate(parts)
    for name in ("marginal_credibility", "ranks", "median", "width", "joint_credibility"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(chunked.tarp_coverage, whole.tarp_coverage)
    # a few numbers per object, whatever S: 4 (N, D) arrays of 8 bytes, joint (8) and TARP (4)
    assert chunked.nbytes == N * (4 * D * 8 + 8 + 4) < samples.nbytes / 25
    # the exact posterior: every credibility and TARP value is uniform on [0, 1]
    from scipy import stats

    for values in (chunked.joint_credibility, *chunked.marginal_credibility.T):
        assert stats.kstest(values, "uniform").pvalue > 1e-3
    assert stats.kstest(chunked.tarp_coverage, "uniform").pvalue > 1e-3


def test_metrics_from_statistics_equal_evaluate_on_the_draws():
    theta, samples, lp_true, lp_samp = _gaussian_draws(seed=2, scale=0.6)
    vis = 10 ** np.random.default_rng(3).uniform(0, 2.5, N)
    direct = evaluate(
        theta,
        samples,
        names=DEFAULT_PRIOR.names,
        visibility=vis,
        log_prob_true=lp_true,
        log_prob_samples=lp_samp,
        seed=4,
    )
    references, box = truth_box_references(theta, seed=4)
    parts = [
        draw_statistics(
            theta[i : i + 64],
            samples[i : i + 64],
            log_prob_true=lp_true[i : i + 64],
            log_prob_samples=lp_samp[i : i + 64],
            tarp_references=references[i : i + 64],
            tarp_box=box,
        )
        for i in range(0, N, 64)
    ]
    chunked = evaluate_statistics(
        theta, DrawStatistics.concatenate(parts), names=DEFAULT_PRIOR.names, visibility=vis
    )
    assert _without_timing(chunked) == _without_timing(direct)
    # the too-narrow posterior is found overconfident from the statistics alone
    assert chunked["coverage"]["joint"]["verdict"] == "overconfident"
    assert chunked["tarp"]["atc"] < -0.05


def test_tarp_from_per_object_values_is_sbis_tarp():
    """The per-object TARP values reproduce sbi's ``_run_tarp`` on the same draws and references."""
    from sbi.diagnostics.tarp import _run_tarp

    theta, samples, _, _ = _gaussian_draws(seed=5)
    references, _ = truth_box_references(theta, seed=9)
    ecp, alpha = _run_tarp(
        torch.as_tensor(np.moveaxis(samples, 1, 0), dtype=torch.float32),
        torch.as_tensor(theta, dtype=torch.float32),
        torch.as_tensor(references),
        num_bins=N // 10,
        z_score_theta=True,
    )
    ours = tarp(samples, theta, seed=9)
    np.testing.assert_array_equal(ours["ecp"], ecp.numpy())
    np.testing.assert_array_equal(ours["alpha"], alpha.numpy())


@pytest.mark.slow
def test_report_does_not_depend_on_the_chunk_size(toy_model, tmp_path, one_torch_thread):
    """Same seed, chunks of 256 objects or one chunk: the same metrics, L-C2ST included."""
    toy = LinearGaussianToy()
    runs = [
        run_diagnostics(
            toy_model,
            toy,
            n=700,
            num_samples=60,
            seed=11,
            views=2,
            out_dir=tmp_path / f"chunk{chunk}",
            progress=False,
            lc2st_probes=10,
            chunk=chunk,
        )
        for chunk in (DRAW_BLOCK, 1000)
    ]
    assert runs[0]["local"] is not None and runs[0]["tarp"] is not None
    assert _without_timing(runs[0]) == _without_timing(runs[1])
    # the chunk size is rounded up to whole blocks of draws
    again = run_diagnostics(
        toy_model,
        toy,
        n=700,
        num_samples=60,
        seed=11,
        views=2,
        out_dir=tmp_path / "chunk300",
        progress=False,
        lc2st_probes=10,
        chunk=300,
    )
    assert _without_timing(again) == _without_timing(runs[0])


def test_driver_never_holds_more_than_one_chunk_of_draws(
    toy_model, tmp_path, monkeypatch, one_torch_thread
):
    """Every array of draws the driver sees is one block (predict) or one chunk (reduction) of
    objects; all clusters are reduced exactly once."""
    import sbicluster.diagnostics.run as run_module
    import sbicluster.inference as inference

    predicted, reduced = [], []
    real_predict, real_reduce = inference.predict, run_module.draw_statistics

    def spy_predict(model, images, **kwargs):
        predicted.append(len(images))
        return real_predict(model, images, **kwargs)

    def spy_reduce(theta, samples, **kwargs):
        reduced.append(np.shape(samples))
        return real_reduce(theta, samples, **kwargs)

    monkeypatch.setattr(inference, "predict", spy_predict)
    monkeypatch.setattr(run_module, "draw_statistics", spy_reduce)
    metrics = run_diagnostics(
        toy_model,
        LinearGaussianToy(),
        n=1100,
        num_samples=40,
        seed=2,
        views=1,
        out_dir=tmp_path,
        progress=False,
        lc2st_probes=0,
        chunk=512,
    )
    assert predicted == [DRAW_BLOCK] * 4 + [1100 - 4 * DRAW_BLOCK]
    assert len(reduced) == 3 and all(shape[0] <= 512 and shape[1] == 40 for shape in reduced)
    assert sum(shape[0] for shape in reduced) == metrics["n_clusters"]


@pytest.mark.slow
def test_memory_held_does_not_grow_with_n_times_draws(toy_model, tmp_path, one_torch_thread):
    """Peak traced (numpy) memory grows by far less than the draws of the extra objects would
    take: 1,536 more objects with 300 draws each are 7 MB of float32 draws (float64 copies
    twice that); the chunked driver adds a few hundred bytes per object."""
    toy = LinearGaussianToy()

    def peak(n: int) -> int:
        tracemalloc.start()
        run_diagnostics(
            toy_model,
            toy,
            n=n,
            num_samples=300,
            seed=5,
            views=1,
            out_dir=tmp_path / str(n),
            progress=False,
            lc2st_probes=0,
            chunk=DRAW_BLOCK,
        )
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    extra = 1536
    growth = peak(512 + extra) - peak(512)
    draws_of_extra = extra * 300 * 4 * 4  # float32 (objects, S, D)
    assert growth < draws_of_extra / 4, (growth, draws_of_extra)

"""CUDA runs agree with CPU runs: simulation statistics, a training step, inference.

Marked ``gpu`` (deselected by default; run with ``pytest -m gpu``) and skipped where torch has no
CUDA device. The random streams of CPU and CUDA generators differ, so draws are compared in
distribution (means within a few standard errors) and deterministic functions to float tolerance.
The checks live in ``check_*`` functions of a device argument so that they can also be exercised
on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sbicluster.inference import predict
from sbicluster.model import ClusterModel, default_architecture
from simulators import DEFAULT_PRIOR
from simulators.toy import LinearGaussianToy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = "cuda:0"
"""The device under test, with its index: a simulator's device must equal its generator's, and
``torch.Generator(device="cuda").device`` carries the index."""


def _mid_prior(n: int, device: str) -> torch.Tensor:
    """(n, D) copies of the centre of the default prior box."""
    centre = 0.5 * (DEFAULT_PRIOR.low() + DEFAULT_PRIOR.high())
    return centre.expand(n, DEFAULT_PRIOR.dim).contiguous().to(device)


def check_simulation_statistics(device: str, n: int = 128) -> None:
    """Total fluxes per band of ``n`` clusters at the prior's centre agree in mean between
    ``device`` and the CPU (within 5 standard errors), and the smooth integrated magnitudes of
    the same θ agree to float tolerance."""
    from simulators.cluster import ClusterSimulator

    totals, magnitudes = {}, {}
    for dev in ("cpu", device):
        sim = ClusterSimulator("m83-wfc3", DEFAULT_PRIOR, cluster_fraction=1.0, device=dev)
        gen = torch.Generator(device=dev).manual_seed(0)
        theta = _mid_prior(n, dev)
        batch = sim.simulate(n, gen, theta=theta, label=torch.ones(n, device=dev))
        assert batch.images.device.type == torch.device(dev).type
        assert bool(torch.isfinite(batch.images).all())
        totals[dev] = batch.images.sum(dim=(-2, -1)).double().cpu()  # (n, C) e⁻/s
        index = DEFAULT_PRIOR.index
        magnitudes[dev] = (
            sim.populations[0]
            .integrated_magnitudes(
                theta[:, index("log_age")], theta[:, index("av")], theta[:, index("log_mass")]
            )
            .double()
            .cpu()
        )
    a, b = totals["cpu"], totals[device]
    standard_error = torch.sqrt((a.var(0) + b.var(0)) / n)
    assert torch.all((a.mean(0) - b.mean(0)).abs() < 5 * standard_error + 1e-6 * a.mean(0).abs())
    assert torch.allclose(magnitudes["cpu"], magnitudes[device], rtol=0, atol=1e-4)


def check_training_step_and_predict(device: str) -> None:
    """One optimiser step of the small model on toy simulations on ``device`` gives finite losses
    and changes the weights; :func:`predict` there gives finite draws inside the prior and
    P(cluster) close to the CPU's for the same weights."""
    toy = LinearGaussianToy(device=device)
    torch.manual_seed(0)
    model = ClusterModel(
        toy.prior, toy.bands, toy.observation_shape, default_architecture("small", 2, [1.0, 1.0])
    ).to(device)
    batch = toy.simulate(64, torch.Generator(device=device).manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    losses = model.losses(
        batch.theta,
        batch.images,
        batch.label,
        batch.visibility,
        weights={"classifier": 1.0, "visibility": 0.5, "balance": 0.1},
        autocast=torch.device(device).type == "cuda",
    )
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    opt.zero_grad()
    losses["total"].backward()
    opt.step()
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))

    model.eval()
    images = batch.images[:8]
    pred = predict(
        model,
        images,
        num_samples=200,
        generator=torch.Generator(device=device).manual_seed(2),
        progress=False,
    )
    assert pred.samples.shape == (8, 200, toy.prior.dim)
    for values in (pred.samples, pred.p_cluster, pred.visibility):
        assert np.isfinite(values).all()
    assert bool(toy.prior.contains(torch.from_numpy(pred.samples)).all())
    on_cpu = predict(
        model.to("cpu"),
        images.cpu(),
        num_samples=10,
        generator=torch.Generator().manual_seed(2),
        progress=False,
    )
    assert np.allclose(pred.p_cluster, on_cpu.p_cluster, atol=1e-3)


def check_shipped_model_predicts(device: str) -> None:
    """The shipped model loaded on ``device`` gives finite outputs and the CPU's P(cluster)."""
    from sbicluster.api import simulator_from_card
    from sbicluster.artifact import load_model

    cpu_model = load_model(device="cpu")
    images = simulator_from_card(cpu_model.card).simulate(4, torch.Generator().manual_seed(3))
    images = images.images
    results = {}
    for dev in ("cpu", device):
        model = load_model(device=dev)
        results[dev] = predict(
            model,
            images,
            num_samples=100,
            generator=torch.Generator(device=dev).manual_seed(4),
            progress=False,
        )
        assert np.isfinite(results[dev].samples).all()
    assert np.allclose(results["cpu"].p_cluster, results[device].p_cluster, atol=1e-3)
    medians = {dev: np.median(r.samples, axis=1) for dev, r in results.items()}
    width = (DEFAULT_PRIOR.high() - DEFAULT_PRIOR.low()).numpy()
    # 100 draws: medians agree to a fraction of the prior width, whatever the random stream
    assert np.all(np.abs(medians["cpu"] - medians[device]) < 0.5 * width / math.sqrt(10))


def test_simulation_on_cuda_matches_cpu_statistics():
    check_simulation_statistics(CUDA)


def test_training_step_and_predict_on_cuda():
    check_training_step_and_predict(CUDA)


def test_shipped_model_on_cuda_matches_cpu():
    check_shipped_model_predicts(CUDA)

"""The simulator contract: what every forward model offers to training, diagnostics and demos.

This module owns :class:`Simulator`, the protocol every simulator of this package satisfies
(:class:`simulators.cluster.ClusterSimulator`, :class:`simulators.toy.LinearGaussianToy`), and
the one way to simulate many samples in bounded memory: :func:`iter_simulation_chunks` (stream)
and :func:`simulate_in_chunks` (concatenated on the CPU). It must not know about any concrete
simulator, nor about training or inference.

A simulator maps parameters θ (in the order and units of its ``prior``) and a label
(1 = cluster, 0 = background only) to observations, using only the ``torch.Generator`` it is
given, so that the same generator state gives the same batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from .batch import SimulationBatch
from .priors import ClusterPrior

__all__ = ["Simulator", "iter_simulation_chunks", "simulate_in_chunks"]


@runtime_checkable
class Simulator(Protocol):
    """A batched forward model ``(θ, label) → observations`` with ground truth.

    Attributes
    ----------
    prior : ClusterPrior
        Prior over θ; names, units and bounds of the parameters.
    bands : tuple of str
        Photometric bands, in the order of the observations' band axis.
    observation_shape : tuple of int
        Shape of one observation, e.g. ``(C, H, W)`` for cutouts in e⁻/s per pixel.
    device : torch.device
        Where :meth:`simulate` runs; its generator must live there.
    """

    prior: ClusterPrior
    bands: tuple[str, ...]
    observation_shape: tuple[int, ...]
    device: torch.device

    def simulate(
        self,
        n: int,
        generator: torch.Generator,
        *,
        theta: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
    ) -> SimulationBatch:
        """Simulate ``n`` samples; θ from the prior and labels at random unless given."""
        ...

    def card(self) -> dict:
        """JSON-serialisable description from which :func:`simulators.registry.simulator_from_card`
        rebuilds the same simulator."""
        ...


def iter_simulation_chunks(
    simulator: Simulator,
    n: int,
    generator: torch.Generator,
    *,
    chunk: int = 256,
    theta: torch.Tensor | None = None,
    label: torch.Tensor | None = None,
    progress: bool = False,
    desc: str = "simulate",
) -> Iterator[SimulationBatch]:
    """Simulate ``n`` samples in consecutive calls of at most ``chunk``, yielding each on the CPU.

    The chunks draw from ``generator`` in order, so for a given ``chunk`` the stream is the same
    however it is consumed (streamed to disk or concatenated). ``theta`` and ``label`` are passed
    to ``simulate`` only when given (as consecutive slices).

    Parameters
    ----------
    simulator : Simulator
        The forward model.
    n : int
        Number of samples (≥ 0).
    generator : torch.Generator
        Source of all randomness, on ``simulator.device``.
    chunk : int
        Samples per call (bounds memory).
    theta : torch.Tensor, optional
        (n, d) parameters to simulate; drawn from the prior if not given.
    label : torch.Tensor, optional
        (n,) labels; drawn by the simulator if not given.
    progress : bool
        Show a progress bar (samples).
    desc : str
        Label of the progress bar.

    Yields
    ------
    SimulationBatch
        Consecutive chunks, on the CPU.

    Raises
    ------
    ValueError
        If ``n`` is negative, ``chunk`` not positive, or ``theta``/``label`` are not ``n`` long.
    """
    from tqdm.auto import tqdm

    if n < 0 or chunk < 1:
        raise ValueError(f"need n >= 0 and chunk >= 1, got n={n}, chunk={chunk}")
    for name, given in (("theta", theta), ("label", label)):
        if given is not None and len(given) != n:
            raise ValueError(f"{name} has {len(given)} rows for n={n} samples")
    device = simulator.device
    with tqdm(total=n, desc=desc, unit="obj", disable=not progress) as bar:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            # only what was given is passed: without theta/label the call is simulate(k, generator)
            given = {
                name: rows[start:stop].to(device)
                for name, rows in (("theta", theta), ("label", label))
                if rows is not None
            }
            batch = simulator.simulate(stop - start, generator, **given)
            bar.update(stop - start)
            yield batch.to("cpu")


def simulate_in_chunks(
    simulator: Simulator,
    n: int,
    generator: torch.Generator,
    **kwargs,
) -> SimulationBatch:
    """:func:`iter_simulation_chunks`, concatenated into one batch on the CPU.

    Parameters
    ----------
    simulator, n, generator, **kwargs
        As for :func:`iter_simulation_chunks`.

    Returns
    -------
    SimulationBatch
        ``n`` samples on the CPU.
    """
    return SimulationBatch.concatenate(
        list(iter_simulation_chunks(simulator, n, generator, **kwargs))
    )

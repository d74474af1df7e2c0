"""The unit of data that flows from the simulator to training: :class:`SimulationBatch`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["SimulationBatch"]


@dataclass
class SimulationBatch:
    """A batch of simulated cutouts with their ground truth.

    Attributes
    ----------
    theta : torch.Tensor
        float32, shape (B, 4): (log10 age/yr, log10 M/M☉, log10 r_h/pc, A_V/mag). Rows of
        background-only samples (``label == 0``) hold prior draws that were *not* rendered.
    images : torch.Tensor
        float32, shape (B, C, H, W), e⁻/s per pixel, band order of the instrument preset.
    label : torch.Tensor
        int64, shape (B,): 1 for a cluster, 0 for background only.
    visibility : torch.Tensor
        float32, shape (B,): signal-to-noise measure of the cluster (see
        :func:`simulators.noise.visibility`); 0 for background-only samples.
    nuisances : dict of str to torch.Tensor
        Per-sample nuisance parameters drawn by the simulator (each shape (B,) or (B, k)),
        e.g. ``feh``, ``eff_gamma``, ``offset_x``, ``offset_y``.
    """

    theta: torch.Tensor
    images: torch.Tensor
    label: torch.Tensor
    visibility: torch.Tensor
    nuisances: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.theta.shape[0]

    def to(self, device: torch.device | str) -> SimulationBatch:
        """The same batch on ``device``."""
        return SimulationBatch(
            self.theta.to(device),
            self.images.to(device),
            self.label.to(device),
            self.visibility.to(device),
            {k: v.to(device) for k, v in self.nuisances.items()},
        )

    def __getitem__(self, index) -> SimulationBatch:
        return SimulationBatch(
            self.theta[index],
            self.images[index],
            self.label[index],
            self.visibility[index],
            {k: v[index] for k, v in self.nuisances.items()},
        )

    @classmethod
    def concatenate(cls, batches: Sequence[SimulationBatch]) -> SimulationBatch:
        """One batch holding ``batches`` in order (on the device of the first).

        Nuisances present in every batch are kept, in the order of the first batch; those missing
        from any are dropped (simulators record some nuisances only when they drew them).

        Raises
        ------
        ValueError
            If ``batches`` is empty.
        """
        if not batches:
            raise ValueError("cannot concatenate an empty sequence of batches")
        if len(batches) == 1:
            return batches[0]
        keys = [k for k in batches[0].nuisances if all(k in b.nuisances for b in batches[1:])]
        return cls(
            torch.cat([b.theta for b in batches]),
            torch.cat([b.images for b in batches]),
            torch.cat([b.label for b in batches]),
            torch.cat([b.visibility for b in batches]),
            {k: torch.cat([b.nuisances[k] for b in batches]) for k in keys},
        )

"""Embedding of catalogue rows (integrated photometry with errors and a missing-band mask).

This module owns the map from catalogue rows ``(B, C, 4)`` (per band column: absolute magnitude
or absolute detection limit, log10 error, measured flag, not-detected flag; the layout of
:mod:`simulators.catalogue`) to a feature vector ``(B, F)``: a fixed affine normalisation of
the two value entries, zeroed where the band is missing, followed by a multilayer perceptron.
It must not know about parameters, priors or losses.

Normalisation
-------------
``(M − centre) / scale`` with fixed ``centre`` = −8 mag and ``scale`` = 4 mag for the magnitude
entry (measured or limit), ``(log10 σ + 1.2) / 0.5`` for the error entry; both are set to 0 where
their flag says they carry nothing, so a missing band is exactly the zero vector plus its flags.
The constants are stored in the model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["CatalogueEmbeddingConfig", "CATALOGUE_EMBEDDING", "CatalogueEmbedding"]


@dataclass(frozen=True)
class CatalogueEmbeddingConfig:
    """Architecture of :class:`CatalogueEmbedding`.

    Parameters
    ----------
    hidden : int
        Width of the hidden layers.
    layers : int
        Number of hidden layers.
    features : int
        Size of the output embedding.
    mag_centre, mag_scale : float
        Normalisation of absolute magnitudes, mag.
    log_sigma_centre, log_sigma_scale : float
        Normalisation of log10 errors (log10 mag).
    """

    hidden: int = 128
    layers: int = 3
    features: int = 64
    mag_centre: float = -8.0
    mag_scale: float = 4.0
    log_sigma_centre: float = -1.2
    log_sigma_scale: float = 0.5
    kind: str = "catalogue_mlp"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CatalogueEmbeddingConfig:
        return cls(**data)


CATALOGUE_EMBEDDING = CatalogueEmbeddingConfig()
"""The network size ``catalogue`` (``sbicluster train --embedding catalogue``)."""


class CatalogueEmbedding(nn.Module):
    """MLP on normalised catalogue rows (see the module docstring).

    Parameters
    ----------
    n_bands : int
        Band columns C.
    config : CatalogueEmbeddingConfig
    """

    def __init__(
        self, n_bands: int, config: CatalogueEmbeddingConfig = CATALOGUE_EMBEDDING
    ) -> None:
        super().__init__()
        self.config = config
        self.n_bands = int(n_bands)
        layers, width = [], 4 * self.n_bands
        for _ in range(config.layers):
            layers += [nn.Linear(width, config.hidden), nn.GELU()]
            width = config.hidden
        layers.append(nn.Linear(width, config.features))
        self.net = nn.Sequential(*layers)

    @property
    def features(self) -> int:
        return self.config.features

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 4) catalogue rows → (B, C, 4) normalised entries."""
        c = self.config
        measured, nondet = x[..., 2], x[..., 3]
        has_value = (measured + nondet).clamp(max=1.0)
        mag = (x[..., 0] - c.mag_centre) / c.mag_scale * has_value
        err = (x[..., 1] - c.log_sigma_centre) / c.log_sigma_scale * measured
        return torch.stack([mag, err, measured, nondet], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 4) → (B, features)."""
        return self.net(self.normalise(x.float()).flatten(1))

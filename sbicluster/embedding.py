"""ResNet embedding of multi-band cutouts, with its fixed input normalisation.

This module owns the map from an image batch ``(B, C, H, W)`` in e⁻/s per pixel to a feature
vector ``(B, F)``: a per-band asinh stretch with fixed softening (:class:`AsinhNormalisation`)
followed by a residual network (:class:`ResNetEmbedding`) whose first convolution keeps full
resolution (7×7, stride 1, as in Table 1 of Bialopetravičius & Narbutis 2020). It must not know
about parameters, priors or losses.

Normalisation
-------------
``y = asinh(x / s_b)`` for band ``b``, with ``s_b`` a *fixed* softening in e⁻/s (stored in the
model card; training sets it once from the background noise of the first simulated batch). No
per-image statistics are used, so the flux level itself stays visible to the network (it carries
the mass) and faint or empty cutouts are handled like any other. The stretch is linear for
``|x| ≲ s_b`` (noise-dominated pixels) and logarithmic for bright pixels.

References
----------
He, Zhang, Ren & Sun (2016), "Deep Residual Learning for Image Recognition", arXiv:1512.03385.
Bialopetravičius & Narbutis (2020), A&A 633, A148, arXiv:1911.08254.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = [
    "EmbeddingConfig",
    "EMBEDDING_PRESETS",
    "AsinhNormalisation",
    "fast_asinh",
    "ResNetEmbedding",
    "build_embedding",
]


@dataclass(frozen=True)
class EmbeddingConfig:
    """Architecture of :class:`ResNetEmbedding`.

    Parameters
    ----------
    width : int
        Channels of the stem and first stage; stage ``k`` has ``width · 2**k`` channels.
    blocks : tuple of int
        Residual blocks per stage; every stage after the first halves the resolution.
    features : int
        Size of the output embedding.
    stem_kernel : int
        Side of the stem convolution (stride 1: full resolution is kept).
    pool : int
        The last feature map is average-pooled to ``pool × pool`` cells and flattened, so coarse
        position information (centre vs. outskirts) survives (``1`` = global average pooling).
    """

    width: int = 16
    blocks: tuple[int, ...] = (1, 1)
    features: int = 32
    stem_kernel: int = 7
    pool: int = 2

    def to_dict(self) -> dict:
        return {**asdict(self), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, data: dict) -> EmbeddingConfig:
        return cls(**{**data, "blocks": tuple(data["blocks"])})


EMBEDDING_PRESETS: dict[str, EmbeddingConfig] = {
    # the smallest network, for tests
    "small": EmbeddingConfig(width=16, blocks=(1, 1), features=32),
    # the default for CPU training (sbicluster.training picks it on CPU)
    "cpu": EmbeddingConfig(width=16, blocks=(1, 1, 1), features=64),
    # close to the paper's capacity (64-channel full-resolution stem, four stages)
    "paper": EmbeddingConfig(width=64, blocks=(2, 2, 2, 2), features=256),
}


class AsinhNormalisation(nn.Module):
    """Per-band ``asinh(x / s_b)`` stretch with fixed softening ``s_b`` (e⁻/s).

    Parameters
    ----------
    softening : sequence of float
        One softening per band, e⁻/s per pixel (positive).
    """

    def __init__(self, softening: Sequence[float]) -> None:
        super().__init__()
        s = torch.as_tensor(list(softening), dtype=torch.float32)
        if s.ndim != 1 or not bool((s > 0).all()):
            raise ValueError(
                f"softening must be a positive 1-D sequence (e-/s), got {list(softening)}"
            )
        self.register_buffer("softening", s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) e⁻/s, finite → (B, C, H, W) dimensionless."""
        return fast_asinh(x / self.softening.to(x.dtype)[:, None, None])


def fast_asinh(y: torch.Tensor) -> torch.Tensor:
    """``asinh(y)`` about as accurately as :func:`torch.asinh` (within 1.01 units in the last
    place of the exact value in float32, 2 of ``torch.asinh`` in float64), for ``|y|`` below half
    the dtype's largest value (1.7 × 10³⁸ in float32).

    Evaluated as ``sign(y) · log1p(|y| + |y| · |y| / (1 + hypot(|y|, 1)))``, which is exact
    algebra (``asinh a = log(a + √(a² + 1))``), keeps full relative precision near zero through
    ``log1p``, and overflows only where ``2 |y|`` does. Every step is a vectorised kernel,
    whereas ``torch.asinh`` on CPU is not: on a batch of 128 three-band 64 × 64 cutouts this takes
    about 4 ms against 15 ms, a noticeable share of a training step.

    Parameters
    ----------
    y : torch.Tensor
        Values with ``|y|`` below half the dtype's largest value (beyond it the result is
        infinite; an infinite ``y`` gives NaN).

    Returns
    -------
    torch.Tensor
        ``asinh(y)``, same shape and dtype.
    """
    a = y.abs()
    return torch.copysign(torch.log1p(a + a * (a / (1 + torch.hypot(a, a.new_ones(()))))), y)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.skip(x))


class ResNetEmbedding(nn.Module):
    """Residual network for small multi-band cutouts → feature vector.

    Stem: ``k×k`` convolution (stride 1) + BatchNorm + ReLU at full resolution; then stages of
    basic residual blocks (the first block of every stage but the first has stride 2); global
    average pooling; a linear layer to ``features`` outputs.

    The convolutions run in the channels-last memory layout (weights and activations), which
    oneDNN on CPU evaluates faster than the default layout for these narrow layers (measured on
    2 cores: 1.2–1.3× for inference, 1.45× for a training step of the ``cpu`` preset); the
    outputs are the same function of the inputs.

    Parameters
    ----------
    n_bands : int
        Input channels.
    softening : sequence of float
        Per-band asinh softening, e⁻/s (see :class:`AsinhNormalisation`).
    config : EmbeddingConfig
        Depth and width.
    """

    def __init__(
        self, n_bands: int, softening: Sequence[float], config: EmbeddingConfig = EmbeddingConfig()
    ) -> None:
        super().__init__()
        if len(softening) != n_bands:
            raise ValueError(
                f"need one softening per band: {n_bands} bands, {len(softening)} values"
            )
        self.config = config
        self.n_bands = n_bands
        self.normalise = AsinhNormalisation(softening)
        k = config.stem_kernel
        self.stem = nn.Sequential(
            nn.Conv2d(n_bands, config.width, k, 1, k // 2, bias=False),
            nn.BatchNorm2d(config.width),
            nn.ReLU(),
        )
        layers, c_in = [], config.width
        for stage, n_blocks in enumerate(config.blocks):
            c_out = config.width * 2**stage
            for i in range(n_blocks):
                layers.append(_BasicBlock(c_in, c_out, 2 if (stage > 0 and i == 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(config.pool)
        self.head = nn.Linear(c_in * config.pool**2, config.features)
        self.to(memory_format=torch.channels_last)  # 4-D weights only; loading keeps the layout

    @property
    def features(self) -> int:
        return self.config.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) e⁻/s → (B, features)."""
        h = self.normalise(x).contiguous(memory_format=torch.channels_last)
        h = self.stages(self.stem(h))
        return self.head(self.pool(h).flatten(1))


def build_embedding(
    n_bands: int, softening: Sequence[float], preset: str | EmbeddingConfig | dict = "small"
) -> ResNetEmbedding:
    """Build a :class:`ResNetEmbedding` from a preset name, config or config dict.

    Parameters
    ----------
    n_bands : int
        Number of bands.
    softening : sequence of float
        Per-band asinh softening, e⁻/s.
    preset : str, EmbeddingConfig or dict
        ``"small"``, ``"cpu"``, ``"paper"`` or a custom configuration.

    Raises
    ------
    ValueError
        Unknown preset name.
    """
    if isinstance(preset, str):
        if preset not in EMBEDDING_PRESETS:
            raise ValueError(
                f"unknown embedding preset {preset!r}; choose one of {sorted(EMBEDDING_PRESETS)}"
            )
        config = EMBEDDING_PRESETS[preset]
    elif isinstance(preset, dict):
        config = EmbeddingConfig.from_dict(preset)
    else:
        config = preset
    return ResNetEmbedding(n_bands, softening, config)

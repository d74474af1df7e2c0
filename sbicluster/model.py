"""The trained object: ResNet embedding + flow posterior q(θ | x) + P(cluster | x) + visibility.

This module owns :class:`ClusterModel` and the description of its architecture (a JSON-able dict,
stored in the model card, from which the network is rebuilt with no data). It must not simulate,
train (see :mod:`sbicluster.training`) or touch files (see :mod:`sbicluster.artifact`).

Design
------
* One :class:`~sbicluster.embedding.ResNetEmbedding` reads the cutout; its features condition
  three heads. Catalogue models (network size ``catalogue``, observations (C, 4) catalogue rows
  of :mod:`simulators.catalogue`) read the row with
  :class:`~sbicluster.catalogue_embedding.CatalogueEmbedding`, an MLP, instead; the rest is the same.
* The posterior head is a zuko neural spline flow (rational-quadratic splines, Durkan et al.
  2019, arXiv:1906.04032) wrapped in sbi's own
  :class:`sbi.neural_nets.estimators.ZukoFlow` with the ResNet as ``embedding_net``, so that
  :meth:`ClusterModel.posterior` is a stock :class:`sbi.inference.DirectPosterior` and sbi's
  sampling and diagnostics (``run_sbc``, ``run_tarp``, ``log_prob_batched``) work on it.
  Default: *coupling* spline layers (``coupling_nsf``; zuko ``GeneralCouplingTransform`` with
  rational-quadratic splines, masks :func:`coupling_masks`): sampling needs one network pass per
  layer, against D passes per layer for the autoregressive NSF (``zuko_nsf``, also supported),
  which is what makes 1000 draws per
  cutout cheap (``benchmarks/inference.py`` measures the sampling speed).
* Prior bounds: the first flow transform is the fixed bijection
  ``z = logit((θ - low)/(high - low)) / (π/√3)`` (:class:`BoxLogitTransform`; unit variance under
  the uniform prior, so it doubles as the θ standardisation). Every sample of the flow is inside
  the prior box by construction: sbi's rejection step never rejects and no mass leaks.
  This replaces sbi's data-dependent z-scoring of θ, which would need a training batch to rebuild.
* Optional per-cutout standardisation (flow option ``conditional_affine``, off in the presets):
  after the box map a diagonal affine layer whose shift and log-scale are predicted from the
  embedding, ``z' = exp(a(x)) z + b(x)``, recentres and rescales each posterior before the
  splines. Meant for the sharp posteriors of bright clusters; the presets leave it off
  (``benchmarks/results/calibration.md`` records how it fared).
* Optional temperature on the base distribution (flow option ``base_temperature``, never
  trained with the rest): the last flow layer scales the base coordinates by 1/τ(x), widening or
  narrowing each cutout's posterior; :mod:`sbicluster.recalibration` fits it on held-out
  simulations after training, with everything else frozen, and
  :mod:`sbicluster.coverage_factor` optionally multiplies it by a factor per bin of predicted
  visibility fitted to HPD coverage (flow option ``base_temperature["factor_bins"]``); with
  ``base_temperature["location"]`` the layer also shifts the base coordinates by μ(x) first.
* The classifier head gives the logit of P(cluster | x); the visibility head regresses
  ``log(1 + visibility)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import zuko
from sbi.inference import DirectPosterior
from sbi.neural_nets.estimators import ZukoFlow
from torch import nn
from torch.distributions import Transform, constraints
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.lazy import LazyTransform
from zuko.nn import MLP
from zuko.transforms import DependentTransform, MonotonicAffineTransform, MonotonicRQSTransform
from zuko.utils import unpack

from simulators.priors import ClusterPrior

from .balance import split_balancing_penalty
from .embedding import EMBEDDING_PRESETS, EmbeddingConfig, ResNetEmbedding
from .temperature import BaseTemperature

__all__ = [
    "DEFAULT_FLOW",
    "FLOW_PRESETS",
    "HEAD_HIDDEN",
    "COUPLING_MASKS",
    "coupling_masks",
    "BoxLogitTransform",
    "ClusterModel",
    "ConditionalAffineTransform",
    "default_architecture",
    "weighted_loss",
]

LOGISTIC_STD = math.pi / math.sqrt(3.0)
"""Standard deviation of logit(U), U ~ Uniform(0, 1)."""

DEFAULT_FLOW: dict = {
    "type": "coupling_nsf",
    "hidden_features": 128,
    "hidden_layers": 2,
    "num_transforms": 8,
    "bins": 10,
    "conditional_affine": False,
}
"""Flow hyper-parameters of the ``cpu`` and ``paper`` sizes (they differ in the embedding and
the heads, :data:`~sbicluster.embedding.EMBEDDING_PRESETS` and :data:`HEAD_HIDDEN`)."""
FLOW_PRESETS: dict[str, dict] = {
    "small": {**DEFAULT_FLOW, "hidden_features": 64, "num_transforms": 6, "bins": 8},
    "catalogue": DEFAULT_FLOW,
    "cpu": DEFAULT_FLOW,
    "paper": DEFAULT_FLOW,
}
"""Flow hyper-parameters per network size: a smaller flow for ``small`` (tests), else
:data:`DEFAULT_FLOW`."""
COUPLING_MASKS: tuple[tuple[bool, ...], ...] = (
    (True, True, False, False),
    (False, False, True, True),
    (True, False, True, False),
    (False, True, False, True),
    (True, False, False, True),
    (False, True, True, False),
)
"""Coupling masks of ``coupling_nsf`` layers for a θ of 4 parameters, cycled: every 2+2 split and
its complement, so each parameter is conditioned on each other one."""


def coupling_masks(dim: int) -> tuple[tuple[bool, ...], ...]:
    """Coupling masks for a θ of ``dim`` parameters, cycled over the ``coupling_nsf`` layers.

    :data:`COUPLING_MASKS` for 4 parameters; otherwise, for each bit of the parameter index, the
    split by that bit and its complement. Any two parameters differ in some bit, so each is
    conditioned on each other one in some layer.

    Parameters
    ----------
    dim : int
        Number of parameters D (≥ 2).

    Returns
    -------
    tuple of tuple of bool
        Masks of length D, each with both values.
    """
    if dim == len(COUPLING_MASKS[0]):
        return COUPLING_MASKS
    if dim < 2:
        raise ValueError(f"coupling layers need at least 2 parameters, got {dim}")
    masks = []
    for bit in range(math.ceil(math.log2(dim))):
        mask = tuple(not (i >> bit) & 1 for i in range(dim))
        masks += [mask, tuple(not m for m in mask)]
    return tuple(masks)


HEAD_HIDDEN = {"small": 64, "catalogue": 64, "cpu": 64, "paper": 128}
"""Hidden width of the classifier and visibility heads per network size."""


class BoxLogitTransform(Transform):
    r"""Bijection from the prior box to :math:`\mathbb R^D`: ``z = logit((θ - low)/(high - low)) / scale``.

    Parameters
    ----------
    low, high : torch.Tensor
        (D,) prior bounds, in prior units.
    scale : float
        Divisor of the logit (``π/√3`` gives unit variance under a uniform prior).
    eps : float
        ``(θ - low)/(high - low)`` is clipped to ``[eps, 1 - eps]`` before the logit so that θ on a
        bound has a finite density.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        low: torch.Tensor,
        high: torch.Tensor,
        *,
        scale: float = LOGISTIC_STD,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.low, self.width, self.scale, self.eps = low, high - low, float(scale), float(eps)

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.low) / self.width).clamp(self.eps, 1.0 - self.eps)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self._unit(x)) / self.scale

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = self.low + self.width * torch.sigmoid(z * self.scale)
        return torch.minimum(torch.maximum(x, self.low), self.low + self.width)

    def log_abs_det_jacobian(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        u = self._unit(x)
        return -(torch.log(u) + torch.log1p(-u) + torch.log(self.width) + math.log(self.scale)).sum(
            -1
        )

    def call_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self._unit(x)
        ladj = -(torch.log(u) + torch.log1p(-u) + torch.log(self.width) + math.log(self.scale)).sum(
            -1
        )
        return torch.logit(u) / self.scale, ladj


def default_architecture(
    embedding: str,
    n_bands: int,
    softening: Sequence[float],
    *,
    embedding_overrides: dict | None = None,
    flow_overrides: dict | None = None,
) -> dict:
    """Architecture dictionary for a named network size (``small``, ``cpu``, ``paper``).

    The network size is called ``embedding`` everywhere a user chooses it
    (``sbicluster train --embedding``, :attr:`sbicluster.training.TrainingConfig.embedding`); the
    word "preset" alone means the instrument. The architecture dictionary records the size under
    its key ``preset``, the key model cards have always used.

    Parameters
    ----------
    embedding : str
        Network size: ``small``, ``cpu`` or ``paper``.
    n_bands : int
        Number of image bands.
    softening : sequence of float
        Per-band asinh softening of the input normalisation, e⁻/s.
    embedding_overrides, flow_overrides : dict, optional
        Overrides of the size's embedding config / flow hyper-parameters (custom architectures).

    Returns
    -------
    dict
        JSON-serialisable: ``preset`` (the size), ``embedding`` (EmbeddingConfig dict),
        ``normalisation``, ``flow`` (type and hyper-parameters), ``theta_transform``, ``heads``.

    Examples
    --------
    >>> cpu = default_architecture("cpu", 3, [0.004, 0.006, 0.02])
    >>> paper = default_architecture("paper", 3, [0.004, 0.006, 0.02])
    >>> cpu["flow"] == paper["flow"] == DEFAULT_FLOW
    True
    >>> cpu["embedding"]["width"], paper["embedding"]["width"]
    (16, 64)
    >>> arch = default_architecture("cpu", 3, [1.0] * 3, flow_overrides={"type": "zuko_nsf"})
    >>> arch["flow"]["type"]
    'zuko_nsf'
    """
    if embedding == "catalogue":
        from .catalogue_embedding import CATALOGUE_EMBEDDING

        embedding_dict = {**CATALOGUE_EMBEDDING.to_dict(), **(embedding_overrides or {})}
        normalisation = {
            "type": "affine",
            "formula": "magnitude (M - mag_centre) / mag_scale, error (log10 sigma - "
            "log_sigma_centre) / log_sigma_scale; zero where the band carries no value",
        }
    elif embedding in EMBEDDING_PRESETS:
        embedding_dict = {**EMBEDDING_PRESETS[embedding].to_dict(), **(embedding_overrides or {})}
        normalisation = {
            "type": "asinh",
            "softening_e_per_s": [float(s) for s in softening],
            "formula": "asinh(x / softening[band]), x in e-/s per pixel",
        }
    else:
        raise ValueError(
            f"unknown network size (embedding) {embedding!r}; choose one of "
            f"{sorted([*EMBEDDING_PRESETS, 'catalogue'])}"
        )
    return {
        "preset": embedding,
        "n_bands": int(n_bands),
        "embedding": embedding_dict,
        "normalisation": normalisation,
        "flow": {
            **FLOW_PRESETS[embedding],
            **(flow_overrides or {}),
        },  # copies: the presets stay untouched
        "theta_transform": {
            "type": "box_logit",
            "scale": LOGISTIC_STD,
            "formula": "z = logit((theta - low) / (high - low)) / scale",
        },
        "heads": {
            "hidden_features": HEAD_HIDDEN[embedding],
            "classifier": "logit of P(cluster | x)",
            "visibility": "regression of log(1 + visibility)",
        },
    }


class ConditionalAffineTransform(LazyTransform):
    r"""Diagonal affine map with context-dependent shift and scale: ``z ↦ exp(a(c)) ⊙ z + b(c)``.

    ``(a, b) = MLP(c)``; ``a`` is the unconstrained log-scale of
    :class:`zuko.transforms.MonotonicAffineTransform` (softly bounded to slopes in
    [1e-3, 1e3]). Freshly initialised it is close to the identity.

    Parameters
    ----------
    features : int
        Dimension D of ``z``.
    context : int
        Dimension of the context ``c`` (the embedding features).
    hidden_features : sequence of int
        Widths of the MLP's hidden layers.
    """

    def __init__(self, features: int, context: int, hidden_features: Sequence[int]) -> None:
        super().__init__()
        self.hyper = MLP(context, 2 * features, hidden_features)

    def forward(self, c: torch.Tensor) -> DependentTransform:
        shift, log_scale = self.hyper(c).chunk(2, dim=-1)
        return DependentTransform(MonotonicAffineTransform(shift, log_scale), 1)


def _flow_layers(fl: dict, dim: int, context: int) -> tuple[tuple[nn.Module, ...], nn.Module]:
    """Flow layers (after the box map) and base distribution described by ``fl``
    (architecture["flow"]): an optional :class:`ConditionalAffineTransform`, the splines, then
    an optional :class:`~sbicluster.temperature.BaseTemperature` (``base_temperature``, added by
    :mod:`sbicluster.recalibration`)."""
    layers, base = _spline_layers(fl, dim, context)
    temperature = fl.get("base_temperature")
    if temperature:
        layers += (
            BaseTemperature(
                dim,
                context,
                temperature["hidden_features"],
                per_dimension=bool(temperature["per_dimension"]),
                factor_bins=int(temperature.get("factor_bins", 0)),
                location=bool(temperature.get("location", False)),
            ),
        )
    return layers, base


def _spline_layers(fl: dict, dim: int, context: int) -> tuple[tuple[nn.Module, ...], nn.Module]:
    """The optional affine layer and the splines of :func:`_flow_layers`."""
    hidden = [int(fl["hidden_features"])] * int(fl["hidden_layers"])
    bins, n = int(fl["bins"]), int(fl["num_transforms"])
    # cards written before the option existed have no key: those models have no affine layer
    affine = (
        (ConditionalAffineTransform(dim, context, hidden),)
        if fl.get("conditional_affine", False)
        else ()
    )
    nsf = zuko.flows.NSF(
        features=dim, context=context, bins=bins, transforms=n, hidden_features=hidden
    )
    if fl["type"] == "zuko_nsf":
        return (*affine, *nsf.transform.transforms), nsf.base
    if fl["type"] == "coupling_nsf":
        masks = coupling_masks(dim)
        layers = affine + tuple(
            GeneralCouplingTransform(
                dim,
                context,
                mask=torch.tensor(masks[i % len(masks)], dtype=torch.bool),
                univariate=partial(MonotonicRQSTransform, slope=1e-3),
                shapes=[(bins,), (bins,), (bins - 1,)],
                hidden_features=hidden,
            )
            for i in range(n)
        )
        return layers, nsf.base
    raise ValueError(f"unsupported flow type {fl['type']!r}; expected 'coupling_nsf' or 'zuko_nsf'")


class _EmbedOnceZukoFlow(ZukoFlow):
    """sbi's :class:`ZukoFlow` that embeds each observation once in ``log_prob``.

    sbi broadcasts a ``(B, C, H, W)`` condition to ``(S, B, C, H, W)`` and runs the embedding
    S·B times; here the B cutouts are embedded once and the flow broadcasts over the S draws
    (same values, S times less ResNet work, e.g. in ``log_prob_batched`` during diagnostics).
    """

    def log_prob(self, input: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:  # noqa: A002
        if (
            condition.dim() == len(self.condition_shape) + 1
            and input.dim() == 3
            and input.shape[1] == condition.shape[0]
        ):
            return self.net(self._embedding_net(condition)).log_prob(input)
        return super().log_prob(input, condition)


def weighted_loss(terms: dict, weights: dict[str, float]):
    """Training objective from its terms: ``nll + w_classifier · bce + w_visibility · mse
    + w_balance · balance``.

    Parameters
    ----------
    terms : dict
        ``nll``, ``bce``, ``mse`` and ``balance`` (tensors or floats, as from
        :meth:`ClusterModel.losses`).
    weights : dict
        ``classifier`` (default 1), ``visibility`` (default 0.5) and ``balance`` (default 0).
    """
    return (
        terms["nll"]
        + weights.get("classifier", 1.0) * terms["bce"]
        + weights.get("visibility", 0.5) * terms["mse"]
        + weights.get("balance", 0.0) * terms["balance"]
    )


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, n_out),
    )


class ClusterModel(nn.Module):
    """Embedding + flow posterior + classifier + visibility for one instrument and prior.

    Parameters
    ----------
    prior : ClusterPrior
        Prior over θ = (log age, log mass, log r_h, A_V); the flow's support and its width D.
    bands : sequence of str
        Band names, in image channel order.
    image_shape : tuple of int
        (C, H, W) of the cutouts.
    architecture : dict
        As returned by :func:`default_architecture` (stored in the card).
    card : dict, optional
        Model card (filled by training / loading).

    Attributes
    ----------
    embedding : ResNetEmbedding
    flow : zuko.flows.Flow
        Conditional flow over θ given the embedding.
    classifier, visibility_head : nn.Module
        Heads on the embedding.
    """

    def __init__(
        self,
        prior: ClusterPrior,
        bands: Sequence[str],
        image_shape: Sequence[int],
        architecture: dict,
        card: dict | None = None,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.bands = tuple(bands)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.architecture = architecture
        self.card = dict(card or {})
        if len(self.bands) != self.image_shape[0]:
            raise ValueError(f"{len(self.bands)} bands but image_shape {self.image_shape}")
        if architecture["embedding"].get("kind") == "catalogue_mlp":
            from .catalogue_embedding import CatalogueEmbedding, CatalogueEmbeddingConfig

            self.embedding = CatalogueEmbedding(
                len(self.bands), CatalogueEmbeddingConfig.from_dict(architecture["embedding"])
            )
        else:
            soft = architecture["normalisation"]["softening_e_per_s"]
            self.embedding = ResNetEmbedding(
                len(self.bands), soft, EmbeddingConfig.from_dict(architecture["embedding"])
            )
        n_feat = self.embedding.features
        box = zuko.flows.UnconditionalTransform(
            BoxLogitTransform,
            prior.low(),
            prior.high(),
            scale=float(architecture["theta_transform"]["scale"]),
            buffer=True,
        )
        transforms, base = _flow_layers(architecture["flow"], prior.dim, n_feat)
        self.flow = zuko.flows.Flow((box, *transforms), base)
        hidden = int(architecture["heads"]["hidden_features"])
        self.classifier = _mlp(n_feat, hidden, 1)
        self.visibility_head = _mlp(n_feat, hidden, 1)
        # sbi's estimator shares (does not copy) the embedding and the flow; kept out of the module
        # registry so that parameters are stored once.
        object.__setattr__(
            self,
            "_estimator",
            _EmbedOnceZukoFlow(
                self.flow,
                self.embedding,
                input_shape=torch.Size([prior.dim]),
                condition_shape=torch.Size(self.image_shape),
            ),
        )

    # ------------------------------------------------------------------ pieces
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def estimator(self) -> ZukoFlow:
        """sbi density estimator (``log_prob``, ``sample``, ``loss``) sharing this model's weights."""
        return self._estimator

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) e⁻/s → (B, F) features."""
        return self.embedding(images)

    def flow_log_prob(self, theta: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """log q(θ | features) in prior units; θ (..., B, D), features (B, F) → (..., B)."""
        return self.flow(features.float()).log_prob(theta)

    def sample_from_features(
        self,
        features: torch.Tensor,
        num_samples: int,
        generator: torch.Generator | None = None,
        *,
        max_rows: int | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Posterior draws for embedded cutouts.

        Parameters
        ----------
        features : torch.Tensor
            (B, F) embeddings.
        num_samples : int
            Draws per cutout, S.
        generator : torch.Generator, optional
            Source of the base-distribution noise (on the model's device).
        max_rows : int, optional
            Push at most this many of the S × B draws through the flow at once (bounds the
            flow's working memory, a few kB per row for the default flow). The noise is drawn as
            one (S, B, D) tensor first, so the draws do not depend on ``max_rows``.
        noise : torch.Tensor, optional
            (S, B, D) standard-normal base draws to transform instead of drawing them from
            ``generator`` (moved to the features' device).

        Returns
        -------
        torch.Tensor
            (S, B, D) draws in prior units (D = ``prior.dim``), always inside the prior box.
        """
        features = features.float()
        if noise is None:
            gdev = generator.device if generator is not None else features.device
            noise = torch.randn(
                (num_samples, features.shape[0], self.prior.dim), generator=generator, device=gdev
            )
        elif tuple(noise.shape) != (num_samples, features.shape[0], self.prior.dim):
            raise ValueError(
                f"noise of shape {tuple(noise.shape)}; expected "
                f"{(num_samples, features.shape[0], self.prior.dim)}"
            )
        z = noise.to(features.device, torch.float32)
        if self.architecture["flow"]["type"] == "coupling_nsf":
            inverse = self._coupling_inverse
        else:
            transform = self.flow(features).transform
            inverse = lambda z_, _features: transform.inv(z_)  # noqa: E731
        step = num_samples if max_rows is None else max(1, max_rows // max(1, features.shape[0]))
        if step >= num_samples:
            return inverse(z, features)
        return torch.cat([inverse(z[i : i + step], features) for i in range(0, num_samples, step)])

    def _coupling_inverse(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Inverse of the coupling flow for (S, B, D) base draws, with the context term of every
        hyper-network's first layer computed once per cutout instead of once per draw.

        Numerically the same map as ``self.flow(features).transform.inv(z)`` (tested), with less
        work: the context (F ≫ 2 inputs) dominates the cost of each hyper-network's first layer,
        and here it is multiplied once per cutout rather than once per draw.
        """
        layers = list(self.flow.transform.transforms)
        x = z
        for layer in reversed(layers[1:]):
            if not isinstance(layer, GeneralCouplingTransform):
                x = layer(features).inv(x)
                continue
            first, rest = layer.hyper[0], list(layer.hyper)[1:]
            mask = layer.mask
            n_a = int(mask.sum())
            ctx = torch.nn.functional.linear(features, first.weight[:, n_a:], first.bias)  # (B, H)
            y_a, y_b = x[..., mask], x[..., ~mask]
            h = torch.nn.functional.linear(y_a, first.weight[:, :n_a]) + ctx
            for module in rest:
                h = module(h)
            phi = h.unflatten(-1, (-1, layer.total))
            phi = unpack(phi, layer.shapes)
            x_b = layer.univariate(*phi).inv(y_b)
            x = torch.empty_like(x)
            x[..., mask], x[..., ~mask] = y_a, x_b
        return layers[0]().inv(x)

    @property
    def base_temperature(self) -> BaseTemperature | None:
        """The flow's :class:`~sbicluster.temperature.BaseTemperature` layer of a recalibrated
        model (:mod:`sbicluster.recalibration`), else None."""
        last = self.flow.transform.transforms[-1]
        return last if isinstance(last, BaseTemperature) else None

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit of P(cluster | x) and predicted log(1 + visibility), each (B,)."""
        return self.classifier(features).squeeze(-1), self.visibility_head(features).squeeze(-1)

    def _balance(
        self, theta: torch.Tensor, features: torch.Tensor, log_q: torch.Tensor
    ) -> torch.Tensor:
        """Unbiased balanced-NPE penalty of N ≥ 4 cluster pairs (θ, features) with log q(θ | x).

        The clusters are split into two halves; in each, the independent pairs are its own θ
        rolled by one place, so the halves share no simulation and
        :func:`~sbicluster.balance.split_balancing_penalty` is unbiased.
        """
        half = len(theta) // 2
        parts = (slice(0, half), slice(half, None))
        theta_other = torch.cat([theta[part].roll(1, dims=0) for part in parts])
        log_prior = self.prior.distribution(theta.device).log_prob
        joint = log_q - log_prior(theta)
        marginal = self.flow_log_prob(theta_other, features) - log_prior(theta_other)
        return split_balancing_penalty(*((joint[part], marginal[part]) for part in parts))

    # ----------------------------------------------------------------- public
    def log_prob(self, theta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """log q(θ_i | x_i) for paired θ (N, D) (prior units) and images (N, C, H, W) → (N,)."""
        return self.flow_log_prob(theta, self.embed(images))

    def p_cluster(self, images: torch.Tensor) -> torch.Tensor:
        """P(cluster | x), (N,)."""
        return torch.sigmoid(self.heads(self.embed(images))[0])

    def posterior(self) -> DirectPosterior:
        """sbi :class:`~sbi.inference.DirectPosterior` over the prior, sharing this model's weights.

        Samples never fall outside the prior box (see module notes), so sbi's rejection step
        accepts everything.
        """
        device = self.device
        return DirectPosterior(self._estimator, self.prior.distribution(device), device=str(device))

    def losses(
        self,
        theta: torch.Tensor,
        images: torch.Tensor,
        label: torch.Tensor,
        visibility: torch.Tensor,
        *,
        weights: dict[str, float],
        autocast: bool = False,
        global_counts: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses on one batch.

        ``total = nll + weights["classifier"] · bce + weights["visibility"] · mse
        + weights["balance"] · balance``, where ``nll`` is the mean −log q(θ | x) over clusters
        only, ``bce`` the binary cross-entropy of the cluster label over all samples, ``mse`` the
        squared error of log(1 + visibility) over all samples and ``balance`` the unbiased
        balanced-NPE penalty (:func:`sbicluster.balance.split_balancing_penalty`) on the batch's
        clusters split in two halves, each half's θ rolled by one place to form its independent
        pairs. ``balance`` is computed (one more flow pass, no more embedding) only when its
        weight is positive and the batch holds at least 4 clusters, and is 0 otherwise; single
        values can be negative.

        Parameters
        ----------
        theta : (B, D) prior units; images : (B, C, H, W) e⁻/s; label : (B,) 0/1;
        visibility : (B,) ≥ 0.
        weights : dict
            ``classifier``, ``visibility`` and (optional, default 0) ``balance`` loss weights.
        autocast : bool
            Run the embedding under bfloat16 autocast on the images' device, CUDA or CPU (the
            flow always runs in float32).
        global_counts : (int, int), optional
            ``(clusters, samples)`` of the global batch of which this batch is one process's share
            in data-parallel training (:mod:`sbicluster.training.distributed`): each term is then
            this share's sum divided by the global count, so that the processes' terms add up to
            the global batch's means. The balancing penalty is not available this way.
        """
        if global_counts is not None and weights.get("balance", 0.0) > 0:
            raise ValueError("the balancing penalty does not split over processes")
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            features = self.embed(images)
        features = features.float()
        logit, vis = self.heads(features)
        is_cl = label.bool()
        zero = features.sum() * 0.0
        nll, balance = zero, zero
        if bool(is_cl.any()):
            theta_cl, features_cl = theta[is_cl], features[is_cl]
            log_q = self.flow_log_prob(theta_cl, features_cl)
            nll = -log_q.mean() if global_counts is None else -log_q.sum() / global_counts[0]
            if weights.get("balance", 0.0) > 0 and len(theta_cl) >= 4:
                balance = self._balance(theta_cl, features_cl, log_q)
        reduction = "mean" if global_counts is None else "sum"
        bce = nn.functional.binary_cross_entropy_with_logits(
            logit, label.float(), reduction=reduction
        )
        mse = nn.functional.mse_loss(
            vis, torch.log1p(visibility.clamp(min=0.0)), reduction=reduction
        )
        if global_counts is not None:
            bce, mse = bce / global_counts[1], mse / global_counts[1]
        terms = {"nll": nll, "bce": bce, "mse": mse, "balance": balance}
        return {"total": weighted_loss(terms, weights), **terms}

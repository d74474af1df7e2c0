"""Batched amortised inference: posterior draws, P(cluster) and visibility for many cutouts.

This module owns :func:`predict`, the fast path used by the command line and the diagnostics: each
cutout is embedded once, then ``S`` draws are pushed through the flow for a chunk of cutouts at a
time, so memory is bounded by ``batch_size × S`` draws whatever ``N`` is (results are written into
preallocated numpy arrays, or handed chunk by chunk to a ``sink`` such as
:class:`sbicluster.outputs.DrawWriter`, so that the N × S draws need never be in memory at once).
It must not read files or train.

Compared with sbi's stock ``DirectPosterior.sample_batched`` on the same model, :func:`predict`
skips the rejection loop (the flow's support is the prior box by construction, see
:mod:`sbicluster.model`) and the per-call checks; ``benchmarks/inference.py`` measures both.

P(cluster) and the visibility are averaged over symmetric views of each cutout. The simulator that
trains the model is unchanged, in distribution, by 90° rotations and mirror images of a cutout
(circular PSF and cluster profiles, centre offsets symmetric about the cutout centre, uniformly
placed field stars), so the exact classifier gives every view the same answer; a trained network
does not quite, and averaging its logits over the 8 views of the dihedral group removes that
scatter (``benchmarks/results/calibration.md`` measures the gain in AUC). The posterior draws come
from the cutout as given.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .checks import is_whole_number
from .errors import InputError
from .model import ClusterModel

__all__ = [
    "EMBED_ROWS",
    "FLOW_ROWS",
    "SYMMETRY_VIEWS",
    "Prediction",
    "check_batch_size",
    "check_views",
    "classifier_logits",
    "cutout_noise",
    "cutout_seed",
    "embed_in_parts",
    "predict",
    "symmetric_view",
    "symmetric_views",
    "validate_images",
    "view_averaged_heads",
]

SYMMETRY_VIEWS = (1, 2, 4, 8)
"""Allowed numbers of views: the identity; + the 180° rotation; + the 90° and 270° rotations;
+ the mirror image of each of the four."""

logger = logging.getLogger(__name__)

FLOW_ROWS = 1 << 12
"""Draws pushed through the flow per call in :func:`predict`; the draws do not depend on it.
On 2 CPU cores 4,096 rows was both the fastest and the leanest setting measured: 65,536 rows
made the process's peak memory creep up by ~0.5 GB per call (the allocator keeps the freed
large blocks) and ran 30 % slower (``benchmarks/results/inference.md``)."""

EMBED_ROWS = 32
"""Cutouts per pass of the embedding network in :func:`predict` and :func:`view_averaged_heads`
(the features do not depend on it). On 2 CPU cores 16–64 cutouts per pass ran the 8-view
embedding 1.3–1.7× faster than 256 (whose 64 MB activations are fresh pages on every pass) and
keep its working memory near 100 MB."""

SAMPLE_ROWS = 1 << 18
"""Draws generated per sub-chunk of cutouts in :func:`predict`: ``max(1, SAMPLE_ROWS // S)``
cutouts at a time. Changing it changes the draws for a given seed."""


@dataclass
class Prediction:
    """Output of :func:`predict` for N cutouts.

    Attributes
    ----------
    samples : numpy.ndarray or None
        float32 (N, S, D) posterior draws of θ = (log age, log mass, log r_h, A_V), prior units
        (D = ``model.prior.dim``); ``None`` when :func:`predict` handed them to a ``sink``.
    p_cluster : numpy.ndarray
        float32 (N,) probability that the cutout holds a cluster.
    visibility : numpy.ndarray
        float32 (N,) predicted visibility (signal-to-noise measure, ≥ 0).
    """

    samples: np.ndarray | None
    p_cluster: np.ndarray
    visibility: np.ndarray


def validate_images(model: ClusterModel, images: np.ndarray | torch.Tensor) -> None:
    """Check shape and finiteness of a cutout stack; raise :class:`InputError` otherwise."""
    shape = tuple(images.shape)
    if len(shape) != 1 + len(model.image_shape) or shape[1:] != tuple(model.image_shape):
        raise InputError(
            f"images must have shape (N, {', '.join(map(str, model.image_shape))}) "
            f"(N, bands {model.bands}, y, x) in e-/s, got {shape}"
        )


def _check_finite(chunk: torch.Tensor, start: int) -> None:
    bad = ~torch.isfinite(chunk).reshape(chunk.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        idx = (torch.nonzero(bad).flatten()[:5] + start).tolist()
        raise InputError(
            f"images contain NaN or infinite pixels (first bad cutouts: {idx}); "
            "mask or replace them (e.g. with the local sky level) before inference"
        )


def check_batch_size(batch_size: int) -> None:
    """Raise :class:`InputError` unless ``batch_size`` (cutouts per network pass) is an integer ≥ 1."""
    if not is_whole_number(batch_size, numpy_integers=True):
        raise InputError(
            f"batch size must be a positive integer (cutouts per network pass), got {batch_size!r}; "
            "use e.g. --batch-size 256"
        )


def check_views(views: int, image_shape: tuple[int, ...] | None = None) -> None:
    """Raise :class:`InputError` unless ``views`` is in :data:`SYMMETRY_VIEWS` and, when the
    cutouts' ``(..., H, W)`` shape is given, 4 or 8 views have square cutouts to act on."""
    if views not in SYMMETRY_VIEWS:
        raise InputError(f"views must be one of {SYMMETRY_VIEWS}, got {views}")
    if image_shape is not None and views >= 4 and image_shape[-1] != image_shape[-2]:
        raise InputError(
            f"{views} symmetric views need square cutouts, got {tuple(image_shape[-2:])} pixels; "
            "use views=1 or 2"
        )


def symmetric_views(images: torch.Tensor, views: int) -> list[torch.Tensor]:
    """The first ``views`` images of a cutout stack under the dihedral group of the square.

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) cutouts.
    views : int
        1, 2, 4 or 8 (see :data:`SYMMETRY_VIEWS`): the identity, the 180° rotation, the 90° and
        270° rotations, then the left-right mirror image of each. 4 and 8 need square cutouts.

    Returns
    -------
    list of torch.Tensor
        ``views`` tensors of shape (N, C, H, W); the first is ``images`` itself.

    Raises
    ------
    InputError
        ``views`` not in :data:`SYMMETRY_VIEWS`, or 4 or 8 views of non-square cutouts.
    """
    check_views(views, tuple(images.shape))
    return [symmetric_view(images, index) for index in range(views)]


_QUARTER_TURNS = (0, 2, 1, 3)
"""Quarter turns of views 0–3 (and, mirrored, of views 4–7) in :func:`symmetric_views` order."""


def symmetric_view(images: torch.Tensor, index: int) -> torch.Tensor:
    """View ``index`` (0–7) of :func:`symmetric_views` alone, without forming the others.

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) cutouts.
    index : int
        0 the identity, 1 the 180° rotation, 2 and 3 the 90° and 270° rotations, 4–7 the
        left-right mirror images of views 0–3.

    Returns
    -------
    torch.Tensor
        (N, C, H, W) view; ``images`` itself for index 0.

    Raises
    ------
    InputError
        ``index`` outside 0–7, or a 90° view (2, 3, 6, 7) of non-square cutouts.
    """
    if not 0 <= index < max(SYMMETRY_VIEWS):
        raise InputError(f"view index must be in 0–{max(SYMMETRY_VIEWS) - 1}, got {index}")
    turns = _QUARTER_TURNS[index % 4]
    if turns % 2 and images.shape[-1] != images.shape[-2]:
        raise InputError(
            f"view {index} turns the cutout by 90°, which needs square cutouts, got "
            f"{tuple(images.shape[-2:])} pixels"
        )
    view = torch.rot90(images, turns, dims=(-2, -1)) if turns else images
    return torch.flip(view, dims=(-1,)) if index >= 4 else view


def embed_in_parts(model: ClusterModel, images: torch.Tensor) -> torch.Tensor:
    """float32 (N, F) features of (N, C, H, W) cutouts, :data:`EMBED_ROWS` cutouts per pass."""
    if len(images) <= EMBED_ROWS:
        return model.embed(images).float()
    parts = [
        model.embed(images[i : i + EMBED_ROWS]).float() for i in range(0, len(images), EMBED_ROWS)
    ]
    return torch.cat(parts)


@torch.no_grad()
def view_averaged_heads(
    model: ClusterModel,
    images: torch.Tensor,
    views: int,
    *,
    features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier logit and predicted log(1 + visibility), each averaged over symmetric views.

    Parameters
    ----------
    model : ClusterModel
        Trained model, on the device of ``images``.
    images : torch.Tensor
        (N, C, H, W) cutouts in e⁻/s per pixel.
    views : int
        1, 2, 4 or 8 (:func:`symmetric_views`).
    features : torch.Tensor, optional
        ``model.embed(images)`` when the caller already has it (saves one embedding pass).

    Returns
    -------
    logit : torch.Tensor
        (N,) mean over the views of log[P(cluster) / (1 − P(cluster))].
    log_visibility : torch.Tensor
        (N,) mean over the views of the predicted log(1 + visibility).
    """
    if features is None:
        features = embed_in_parts(model, images)
    logit, log_vis = model.heads(features)
    for view in symmetric_views(images, views)[1:]:
        view_logit, view_log_vis = model.heads(embed_in_parts(model, view))
        logit, log_vis = logit + view_logit, log_vis + view_log_vis
    return logit / views, log_vis / views


@torch.no_grad()
def classifier_logits(
    model: ClusterModel, images: torch.Tensor, *, views: int = 8, batch_size: int = 256
) -> np.ndarray:
    """View-averaged classifier logits of a cutout stack, in chunks (:func:`view_averaged_heads`).

    Parameters
    ----------
    model : ClusterModel
        Trained model.
    images : torch.Tensor
        (N, C, H, W) cutouts in e⁻/s per pixel.
    views : int
        1, 2, 4 or 8 (:func:`symmetric_views`).
    batch_size : int
        Cutouts per network pass.

    Returns
    -------
    numpy.ndarray
        float64 (N,) logits log[P(cluster) / (1 − P(cluster))]; unlike ``predict``'s float32
        P(cluster) they keep the order of cutouts whose probabilities round to 1.
    """
    model.eval()
    chunks = [
        view_averaged_heads(model, images[i : i + batch_size].to(model.device), views)[0].cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).double().numpy()


def cutout_seed(seed: int, index: int) -> int:
    """The seed of cutout ``index``'s posterior draws in a run seeded with ``seed`` (a
    :class:`numpy.random.SeedSequence` of the pair, so nearby pairs give unrelated streams)."""
    low, high = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int(low) | (int(high) << 32)


def cutout_noise(seed: int, first_index: int, count: int, num_samples: int, dim: int):
    """Standard-normal base draws (S, count, D) of cutouts ``first_index`` … ``+ count − 1``,
    each from its own CPU generator seeded with :func:`cutout_seed`: a cutout's draws depend only
    on the run's seed and its position, not on chunking, workers or device."""
    noise = torch.empty((num_samples, count, dim))
    generator = torch.Generator()
    for j in range(count):
        generator.manual_seed(cutout_seed(seed, first_index + j))
        noise[:, j] = torch.randn((num_samples, dim), generator=generator)
    return noise


@torch.no_grad()
def predict(
    model: ClusterModel,
    images: np.ndarray | torch.Tensor,
    *,
    num_samples: int = 1000,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    first_index: int = 0,
    batch_size: int = 256,
    views: int = 8,
    progress: bool = True,
    sink: Callable[[int, np.ndarray], None] | None = None,
) -> Prediction:
    """Posterior samples, P(cluster) and visibility for a stack of cutouts.

    Parameters
    ----------
    model : ClusterModel
        Trained model (evaluation mode is set here).
    images : numpy.ndarray or torch.Tensor
        (N, C, H, W) cutouts in e⁻/s per pixel, band order ``model.bands``; finite values only.
    num_samples : int
        Posterior draws per cutout, S.
    generator : torch.Generator, optional
        Source of randomness on the model's device; the same seed gives the same draws.
    seed : int, optional
        Instead of ``generator``: each cutout's draws come from its own generator
        (:func:`cutout_noise`), so they depend only on ``seed`` and the cutout's position
        ``first_index + i``, not on ``batch_size``, on how a run is split or on the device. This
        is what ``sbicluster infer`` uses, in one process or split over workers.
    first_index : int
        Position of ``images[0]`` in the whole run (with ``seed``).
    batch_size : int
        Cutouts read per chunk (embedded :data:`EMBED_ROWS` at a time). Draws are generated
        for at most ``min(batch_size, 2**18 // S)`` cutouts at a time and pushed through the
        flow :data:`FLOW_ROWS` draws at a time, bounding memory.
    views : int
        Symmetric views (:func:`symmetric_views`: 1, 2, 4 or 8) over which the classifier's logit
        and the predicted log(1 + visibility) are averaged. Each extra view costs one more pass
        of the embedding network; the posterior draws always come from the cutout as given.
    progress : bool
        Show a progress bar (only on a terminal).
    sink : callable, optional
        Called as ``sink(start, draws)`` with the float32 (n, S, D) draws of cutouts ``start`` …
        ``start + n − 1``, in order, instead of collecting all draws: the returned
        ``samples`` is then ``None`` and memory does not grow with N × S.

    Returns
    -------
    Prediction

    Raises
    ------
    InputError
        Wrong shape, NaN/inf pixels, a non-positive ``num_samples`` or ``batch_size``, or an
        unknown ``views``.
    """
    from tqdm.auto import tqdm

    if num_samples < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    if seed is not None and generator is not None:
        raise ValueError("give a generator or a seed, not both")
    check_batch_size(batch_size)
    validate_images(model, images)
    check_views(views, tuple(model.image_shape))
    model.eval()
    device = model.device
    n = images.shape[0]
    samples = None if sink else np.empty((n, num_samples, model.prior.dim), dtype=np.float32)
    p_cluster = np.empty(n, dtype=np.float32)
    visibility = np.empty(n, dtype=np.float32)
    # draws generated per sub-chunk bounded to ~2**18 rows, pushed through the flow in smaller parts
    sample_chunk = max(1, min(batch_size, SAMPLE_ROWS // num_samples))
    # stand-in models of the tests and diagnostics take no max_rows
    flow_rows = {"max_rows": FLOW_ROWS} if isinstance(model, ClusterModel) else {}
    bar = tqdm(
        total=n, desc="inference", unit="cutout", disable=not (progress and sys.stderr.isatty())
    )
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        chunk = torch.as_tensor(images[start:stop], dtype=torch.float32).to(device)
        _check_finite(chunk, start)
        features = embed_in_parts(model, chunk)
        logit, log_vis = view_averaged_heads(model, chunk, views, features=features)
        p_cluster[start:stop] = torch.sigmoid(logit).cpu().numpy()
        visibility[start:stop] = torch.expm1(log_vis).clamp(min=0.0).cpu().numpy()
        for s0 in range(0, stop - start, sample_chunk):
            s1 = min(stop - start, s0 + sample_chunk)
            given_noise = {}
            if seed is not None:
                first = first_index + start + s0
                dim = model.prior.dim
                given_noise["noise"] = cutout_noise(seed, first, s1 - s0, num_samples, dim)
            draws = model.sample_from_features(
                features[s0:s1], num_samples, generator, **given_noise, **flow_rows
            )  # (S, b, D)
            draws = draws.transpose(0, 1).cpu().numpy()
            if sink is None:
                samples[start + s0 : start + s1] = draws
            else:
                sink(start + s0, np.ascontiguousarray(draws, dtype=np.float32))
            del draws
        bar.update(stop - start)
    bar.close()
    return Prediction(samples, p_cluster, visibility)

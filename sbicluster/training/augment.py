"""Symmetry augmentation of training batches: :class:`SymmetryAugmented`.

The simulators that train the image models are unchanged in distribution by the rotations and
mirror images of the square (circular PSF and cluster profiles, centres offset symmetrically,
field stars placed uniformly; :mod:`sbicluster.inference` averages the classifier over the same
views for that reason). Showing each training cutout in a random one of those views therefore
trains on the same joint distribution p(θ, x), so the posterior the flow approximates is
unchanged, while a pool read for several epochs offers the network up to 8 distinct images of
each simulation instead of the same one again.

This module owns only the choice and application of the views; the order of the samples is
:mod:`.data`'s. The validation set is left as simulated (it is a fixed yardstick).
"""

from __future__ import annotations

import torch

from simulators.batch import SimulationBatch

from ..inference import check_views, symmetric_view
from .data import TrainingData

__all__ = ["SymmetryAugmented", "AUGMENT_SEED_OFFSET", "POSITION_NUISANCES"]

AUGMENT_SEED_OFFSET = 0x5E7A
"""Offset of the view stream's seed from ``TrainingConfig.seed`` (its own stream, so that turning
augmentation on does not change which samples are drawn)."""


POSITION_NUISANCES = ("offset_x", "offset_y")
"""Nuisances that are positions in the cutout, which a view moves: dropped from augmented batches
(training reads no nuisance; the others, such as ``feh``, are unchanged by a view and kept)."""


class SymmetryAugmented:
    """A :class:`~.data.TrainingData` source whose training cutouts are shown in random views.

    Every sample of every training batch gets a view drawn uniformly from the first ``views`` of
    :func:`sbicluster.inference.symmetric_views` (1, 2, 4 or 8: the identity; + the 180°
    rotation; + the 90° and 270° rotations; + the left-right mirror image of each). θ, labels,
    visibilities and the nuisances other than positions are unchanged, as they are by these
    symmetries; the in-cutout offsets (:data:`POSITION_NUISANCES`) are dropped.

    In data-parallel training the views are drawn for the whole global batch and each process
    takes its share (every ``world_size``-th from its ``rank``, as the pool reader shares rows), so
    P processes augment exactly as one process does.

    Parameters
    ----------
    source : TrainingData
        The batches to augment (fresh simulations or a pool); its ``rank`` and ``world_size``
        attributes, when present, say which share of a global batch it returns.
    views : int
        Number of views drawn among (1, 2, 4 or 8).
    seed : int
        Seed of the view stream.

    Raises
    ------
    InputError
        ``views`` not 1, 2, 4 or 8.
    """

    def __init__(self, source: TrainingData, views: int, seed: int) -> None:
        check_views(views)
        self.source, self.views = source, views
        self.rank = getattr(source, "rank", 0)
        self.world_size = getattr(source, "world_size", 1)
        self.generator = torch.Generator().manual_seed(seed)

    def next(self, n: int) -> SimulationBatch:
        """The source's next ``n`` samples (this process's share), each in a random view."""
        batch = self.source.next(n)
        chosen = torch.randint(self.views, (n,), generator=self.generator)
        share = chosen[self.rank :: self.world_size]
        images = batch.images.clone()
        for index in share.unique().tolist():
            if index == 0:  # the identity: the clone already holds it
                continue
            rows = (share == index).to(images.device)
            images[rows] = symmetric_view(batch.images[rows], index)
        nuisances = {k: v for k, v in batch.nuisances.items() if k not in POSITION_NUISANCES}
        return SimulationBatch(batch.theta, images, batch.label, batch.visibility, nuisances)

    def validation(self) -> SimulationBatch:
        """The source's validation set, as simulated."""
        return self.source.validation()

    def state(self) -> dict[str, torch.Tensor]:
        """The source's state and the view stream's generator (``rng.augment``)."""
        return {**self.source.state(), "rng.augment": self.generator.get_state()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue the source and the view stream saved by :meth:`state`."""
        self.source.load_state({k: v for k, v in tensors.items() if k != "rng.augment"})
        self.generator.set_state(tensors["rng.augment"].cpu())

    def close(self) -> None:
        """Close the source."""
        self.source.close()

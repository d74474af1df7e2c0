"""Training a :class:`~sbicluster.model.ClusterModel` from simulations.

The package, one module per job:

- :mod:`.config`: :class:`TrainingConfig`, :func:`default_config`, :data:`CPU_BUDGET_S`;
- :mod:`.data`: the :class:`TrainingData` protocol, fresh simulations (:class:`OnlineSource`), the
  HDF5 pool (:func:`write_dataset`, :class:`DatasetBatches`), :func:`estimate_softening`;
- :mod:`.augment`: random rotations and mirror images of training cutouts
  (:class:`SymmetryAugmented`);
- :mod:`.schedule`: warm-up + cosine learning rate;
- :mod:`.tracking`: the CSV log, progress bar and TensorBoard events;
- :mod:`.checkpoint`: the checkpoint format (safetensors + JSON);
- :mod:`.card`: the trained model's card;
- :mod:`.warm_start`: starting a run from a trained model's network (:func:`load_warm_start`);
- :mod:`.loop`: :func:`train`, :func:`train_step`, :func:`check_run_dir`;
- :mod:`.distributed`: training in several processes (``torchrun``, DDP, global-batch batch
  normalisation).

This package must not define the network (:mod:`sbicluster.model`) or any simulator.
"""

from .augment import SymmetryAugmented
from .config import CPU_BUDGET_S, TrainingConfig, default_config
from .data import DatasetBatches, OnlineSource, TrainingData, estimate_softening, write_dataset
from .loop import check_augmentation, check_run_dir, train, train_step
from .warm_start import WarmStart, load_warm_start

__all__ = [
    "TrainingConfig",
    "train",
    "train_step",
    "check_run_dir",
    "check_augmentation",
    "SymmetryAugmented",
    "default_config",
    "estimate_softening",
    "write_dataset",
    "DatasetBatches",
    "OnlineSource",
    "TrainingData",
    "CPU_BUDGET_S",
    "WarmStart",
    "load_warm_start",
]

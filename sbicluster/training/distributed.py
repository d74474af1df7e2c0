"""Data-parallel training across processes with ``torch.distributed``: one model replica per
process, each on its share of every global batch, gradients averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`.

This module owns what makes a run of ``P`` processes follow the run of one process on the same
global batch: the process group taken from the launcher's environment (``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; gloo on CPU, nccl on
CUDA, one GPU per process chosen by ``LOCAL_RANK``), batch normalisation whose statistics are
those of the global batch (:class:`GlobalBatchNorm2d`, on CPU as on CUDA), the agreement of all
processes on when to stop (:meth:`ProcessGroup.any`), and the sums of per-process loss terms.
It must not know the loop's order of events, the data layout or the model's architecture.

How a step stays equal to the one-process step
----------------------------------------------
Each loss term of :meth:`sbicluster.model.ClusterModel.losses` is a mean over the global batch
(the flow's −log q over its clusters, the other terms over all samples). Each process sums its own
samples' terms and divides by the *global* counts (:meth:`ProcessGroup.global_counts`), so that the
processes' partial terms add up to the one-process means; it back-propagates ``P`` × its partial
loss, and DDP's gradient average ``(1/P) Σ`` gives the gradient of the global mean. Batch
normalisation in training mode uses the mean and variance of the whole global batch (one
differentiable all-reduce per layer), so activations, gradients and running statistics match as
well. What differs is the order of floating-point sums: runs agree to float32 rounding, not bit
for bit. The balancing penalty (a product of two half-batch means) does not split this way and is
refused with more than one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InputError

__all__ = [
    "ProcessGroup",
    "GlobalBatchNorm2d",
    "use_global_batchnorm",
    "launched_world_size",
    "select_rank_device",
    "join_process_group",
]

SINGLE_PROCESS_ENV = "1"
"""``WORLD_SIZE`` of a run that is not part of a process group."""


def launched_world_size() -> int:
    """Number of processes the launcher started (``WORLD_SIZE``; 1 outside ``torchrun``).

    Raises
    ------
    InputError
        If ``WORLD_SIZE`` is set to something other than a positive integer.
    """
    raw = os.environ.get("WORLD_SIZE", SINGLE_PROCESS_ENV)
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise InputError(f"WORLD_SIZE={raw!r} in the environment: must be a positive integer")
    return size


def select_rank_device() -> None:
    """Make this process's CUDA device the one ``LOCAL_RANK`` names (one GPU per process).

    Called before any CUDA tensor is made, so that ``--device cuda`` (or ``auto``) resolves to
    ``cuda:LOCAL_RANK`` in every process. Does nothing in a single process or without CUDA.
    """
    if launched_world_size() > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


@dataclass
class ProcessGroup:
    """The processes of a data-parallel run, seen from one of them.

    The default is the single process (rank 0 of 1), for which every collective is the identity,
    so the training loop has one code path.

    Parameters
    ----------
    rank : int
        This process's index, 0 … ``world_size`` − 1; rank 0 writes logs, checkpoints and the
        model.
    world_size : int
        Number of processes.
    device : torch.device
        Where this process's collectives' tensors live (its training device).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    def max(self, value: float) -> float:
        """The largest of the processes' ``value``, the same in every process."""
        if not self.parallel:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        """True in every process when ``flag`` is true in at least one (a stop all agree on)."""
        return self.max(1.0 if flag else 0.0) > 0.0

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the processes (the same keys, in the same order, on each)."""
        if not self.parallel:
            return dict(values)
        keys = list(values)
        total = torch.tensor(
            [float(values[k]) for k in keys], dtype=torch.float64, device=self.device
        )
        dist.all_reduce(total)
        return dict(zip(keys, total.cpu().tolist(), strict=True))

    def global_counts(self, label: torch.Tensor) -> tuple[int, int]:
        """Clusters and samples in the global batch of which ``label`` is this process's share."""
        local = (int(label.sum()), int(label.numel()))
        if not self.parallel:
            return local
        counts = self.sum({"clusters": local[0], "samples": local[1]})
        return int(round(counts["clusters"])), int(round(counts["samples"]))

    def barrier(self) -> None:
        """Wait for every process (after rank 0 prepared files the others read)."""
        if self.parallel:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group, if this object joined it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def join_process_group(device: torch.device) -> ProcessGroup:
    """The process group this process belongs to, joined from ``torchrun``'s environment.

    Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) this is the single process. An already
    initialised default group is used as it is (and left open).

    Parameters
    ----------
    device : torch.device
        This process's training device: gloo serves CPU training, nccl CUDA training (the device
        must be ``cuda:LOCAL_RANK``, see :func:`select_rank_device`).

    Returns
    -------
    ProcessGroup
        Call :meth:`ProcessGroup.close` when training ends.

    Raises
    ------
    InputError
        If the environment names several processes but the group cannot be formed.
    """
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup(dist.get_rank(), dist.get_world_size(), device)
    world_size = launched_world_size()
    if world_size == 1:
        return ProcessGroup(device=device)
    if not dist.is_available():
        raise InputError("this torch build has no torch.distributed: train in one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"cannot join the {backend} process group: {err}") from err
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), device, owns_group=True)


class _SummedOverProcesses(torch.autograd.Function):
    """``x`` summed over the processes, differentiably: the gradient of each process's input is
    the sum over processes of the gradients of the output (the adjoint of a sum-all-reduce)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """2-D batch normalisation over the global batch of a data-parallel run, on CPU or CUDA.

    In training mode with more than one process, the per-channel mean and (biased) variance
    normalising the activations are those of all processes' samples together, from one
    differentiable all-reduce of (count, Σx, Σx²) per call; the running statistics are updated
    with the unbiased global variance, as :class:`torch.nn.BatchNorm2d` does for one process. In
    evaluation mode, or in one process, it is :class:`torch.nn.BatchNorm2d` (same parameters and
    buffers, so state dicts are interchangeable).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (N, C, H, W) with global-batch statistics when training in parallel."""
        if not (
            self.training
            and self.track_running_stats
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(x)
        # each process's own mean and variance (native, two-pass), combined over processes in
        # float64 on the per-channel numbers only: Σn·μ and Σn·(σ² + μ²), then E[x²] − E[x]²
        x32 = x.float()
        var_local, mean_local = torch.var_mean(x32, dim=(0, 2, 3), unbiased=False)
        mean_local, var_local = mean_local.double(), var_local.double()
        count = float(x.shape[0] * x.shape[2] * x.shape[3])
        local = torch.cat(
            [
                torch.full((1,), count, dtype=torch.float64, device=x.device),
                count * mean_local,
                count * (var_local + mean_local * mean_local),
            ]
        )
        sums = _SummedOverProcesses.apply(local)
        n, c = sums[0], x.shape[1]
        mean64 = sums[1 : 1 + c] / n
        var64 = (sums[1 + c :] / n - mean64 * mean64).clamp(min=0.0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
            unbiased = (var64 * (n / (n - 1.0)).clamp(min=1.0)).float()
            self.running_mean.mul_(1 - momentum).add_(momentum * mean64.float())
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        # y = x · scale + shift with per-channel scale = w / √(σ² + ε), shift = b − μ · scale
        scale = torch.rsqrt(var64 + self.eps)
        if self.affine:
            scale = scale * self.weight.double()
        shift = -mean64 * scale
        if self.affine:
            shift = shift + self.bias.double()
        shape = (1, c, 1, 1)
        out = torch.addcmul(shift.float().view(shape), x32, scale.float().view(shape))
        return out.to(x.dtype)


def use_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace, in place, every :class:`torch.nn.BatchNorm2d` of ``module`` by a
    :class:`GlobalBatchNorm2d` holding the same parameters and buffers; returns ``module``."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
                device=child.weight.device if child.affine else None,
            )
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            use_global_batchnorm(child)
    return module

"""Checkpoints of a training run: :func:`save_checkpoint`, :func:`load_checkpoint`.

This module owns the checkpoint format, ``checkpoint/state.safetensors`` + ``checkpoint/state.json``
(safetensors and JSON, no pickle), so that an interrupted run continues exactly. It must not decide
when to checkpoint, and the format must stay readable by older and newer versions alike.

``state.safetensors`` keys: ``model.<name>`` (weights), ``opt.<param index>.<name>`` (AdamW
moments and step), the data source's state (``rng.*``, ``disk.*``, see
:class:`sbicluster.training.data.TrainingData`) and ``best.<name>`` (the weights of the best
validation so far, when there is one). ``state.json``: the run's progress record (``step``,
``best_val``, ``best_step``, ``bad_evals``, ``elapsed_s``, ``config``, ``softening``,
``history``, ``best_metrics``, and since checkpoints are written at every stop: ``stop_reason``,
null while the run goes on or was checkpointed periodically, and ``time_limit_s``, the elapsed
time in s at which the run stops on its time budget; older checkpoints lack both and read as an
unfinished run).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..files import atomic_path
from ..model import ClusterModel
from .data import TrainingData

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_meta", "has_checkpoint"]


def has_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a complete checkpoint."""
    return (Path(path) / "state.json").is_file()


def read_checkpoint_meta(path: Path) -> dict:
    """The progress record (``state.json``) of the checkpoint in ``path``, without its tensors."""
    return json.loads((Path(path) / "state.json").read_text())


def save_checkpoint(
    path: Path,
    model: ClusterModel,
    opt: torch.optim.Optimizer,
    data: TrainingData,
    meta: dict,
) -> None:
    """Write a checkpoint to the folder ``path`` (created if needed; files replaced atomically,
    the tensors before the JSON record).

    Parameters
    ----------
    path : Path
        Checkpoint folder.
    model : ClusterModel
        Current weights.
    opt : torch.optim.Optimizer
        The optimizer (its per-parameter state).
    data : TrainingData
        The data source (its stream state).
    meta : dict
        Progress record; its ``best_state`` (a state dict or None) is stored as tensors, the rest
        as JSON.
    """
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    for k, v in data.state().items():
        tensors[k] = v.contiguous()
    if meta.get("best_state") is not None:
        for k, v in meta["best_state"].items():
            tensors[f"best.{k}"] = v.detach().cpu().contiguous()
    path = Path(path)
    info = {k: v for k, v in meta.items() if k != "best_state"}
    with (
        atomic_path(path / "state.json", suffix=".tmp") as json_tmp,
        atomic_path(path / "state.safetensors", suffix=".tmp") as tensors_tmp,
    ):
        save_file(tensors, str(tensors_tmp))
        json_tmp.write_text(json.dumps(info, indent=2, default=float))


def _in_layout_of(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` on ``param``'s device, and in its memory layout when it has its shape.

    The checkpoint stores every tensor contiguous; the embedding's weights are channels-last. The
    fused AdamW step walks a parameter and its moments in memory order, so moments restored in
    another layout than their parameter's would be applied to the wrong elements.
    """
    if value.shape == param.shape:
        return torch.empty_like(param).copy_(value)
    return value.to(param.device)


def load_checkpoint(
    path: Path, model: ClusterModel, opt: torch.optim.Optimizer, data: TrainingData
) -> dict:
    """Restore model, optimizer and data source from the checkpoint in ``path``.

    Parameters
    ----------
    path : Path
        Checkpoint folder written by :func:`save_checkpoint`.
    model, opt, data
        Built exactly as for the run that wrote it; restored in place (tensors onto
        ``model.device``).

    Returns
    -------
    dict
        The progress record, with ``best_state`` (a state dict on ``model.device``, or None).
    """
    from safetensors.torch import load_file

    path = Path(path)
    tensors = load_file(str(path / "state.safetensors"))
    meta = read_checkpoint_meta(path)
    dev = model.device
    model.load_state_dict(
        {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    sd = opt.state_dict()
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = (
                v if name == "step" else _in_layout_of(params[int(i)], v)
            )
    sd["state"] = state
    opt.load_state_dict(sd)
    data.load_state({k: v for k, v in tensors.items() if k.startswith(("rng.", "disk."))})
    best = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")}
    meta["best_state"] = best or None
    return meta

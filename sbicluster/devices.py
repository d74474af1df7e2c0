"""Which torch device to run on, and how to name it in records: :func:`resolve_device`,
:func:`device_name`.

This module owns the translation of the user's ``--device`` choice (``auto``, ``cpu``, ``cuda``,
``cuda:N``) into a :class:`torch.device`, and the human name of a device (GPU model or CPU model)
that model cards and benchmark reports record. It must not move tensors or models.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import InputError

__all__ = ["resolve_device", "device_name", "cpu_name", "cpu_has_bf16"]

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags of native bfloat16 arithmetic (oneDNN's fast bfloat16 kernels)."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The :class:`torch.device` to use.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    torch.device

    Raises
    ------
    InputError
        If the name is not a device, or names CUDA on a machine whose torch cannot use it.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r}: this torch build or machine has no CUDA device; "
            "use --device cpu (or auto)"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}: only cpu and cuda devices are supported")
    if resolved.type == "cuda" and resolved.index is None:
        # a generator made on "cuda" reports "cuda:0"-style devices: name the index explicitly so
        # that device comparisons between simulators, generators and models hold
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def cpu_name() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``"cpu"`` where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (a flag of :data:`BF16_CPU_FLAGS` in
    ``/proc/cpuinfo``; False where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return any(flag in flags for flag in BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def device_name(device: str | torch.device) -> str:
    """Human name of ``device``: the GPU model for CUDA, the CPU model otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()

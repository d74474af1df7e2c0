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

__all__ = [
    "resolve_device",
    "device_name",
    "cpu_name",
    "cpu_has_bf16",
    "cpu_vector_extensions",
    "cpu_description",
]

CPUINFO = Path("/proc/cpuinfo")
"""Where the CPU's model name and instruction-set flags are read (Linux)."""

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags of native bfloat16 arithmetic (oneDNN's fast bfloat16 kernels)."""

VECTOR_CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags that set the speed of torch's CPU kernels, narrowest first: two
machines sold under one model name (``AMD EPYC`` on a virtual machine) can differ in them, and
with them in training and inference rates by several times (bfloat16 autocast without
``avx512_bf16`` or ``amx_bf16`` is slower than float32, not faster)."""


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


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first ``/proc/cpuinfo`` line whose key is ``name`` (None where the file
    cannot be read or has no such line)."""
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _cpu_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())


def cpu_name() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``"cpu"`` where it cannot be read)."""
    return _cpuinfo_field("model name") or "cpu"


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (a flag of :data:`BF16_CPU_FLAGS` in
    ``/proc/cpuinfo``; False where it cannot be read)."""
    return any(flag in _cpu_flags() for flag in BF16_CPU_FLAGS)


def cpu_vector_extensions() -> tuple[str, ...]:
    """The flags of :data:`VECTOR_CPU_FLAGS` this CPU reports, in that order (empty where
    ``/proc/cpuinfo`` cannot be read)."""
    flags = _cpu_flags()
    return tuple(flag for flag in VECTOR_CPU_FLAGS if flag in flags)


def cpu_description() -> str:
    """The CPU's model name with its vector extensions and whether it has native bfloat16,
    e.g. ``"AMD EPYC (avx avx2 fma; no native bfloat16)"``: the name benchmark records give a
    CPU, since one model name can cover machines of different speeds."""
    extensions = cpu_vector_extensions()
    if not extensions:
        return cpu_name()
    native = any(flag in extensions for flag in BF16_CPU_FLAGS)  # one reading of cpuinfo
    bf16 = "native bfloat16" if native else "no native bfloat16"
    return f"{cpu_name()} ({' '.join(extensions)}; {bf16})"


def device_name(device: str | torch.device) -> str:
    """Human name of ``device``: the GPU model for CUDA, otherwise the CPU model with its vector
    extensions (:func:`cpu_description`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_description()

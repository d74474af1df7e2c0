"""Training settings that change a run's speed and not what it computes.

Freed memory kept in the process (:mod:`sbicluster.allocator`): repeated large allocations stop
faulting fresh pages; the fused AdamW step: the same weights to float32 rounding; validation in
chunks of the batch size: the same validation terms to rounding. All are recorded, applied by
``train`` as set, given the values of runs recorded before they existed, and a run resumes
whatever their values."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from sbicluster.allocator import MAX_MMAP_THRESHOLD, retain_freed_memory
from sbicluster.errors import InputError
from sbicluster.training import TrainingConfig, train
from sbicluster.training.config import SPEED_ONLY_FIELDS, upgrade_config_dict
from sbicluster.training.loop import _build_model, validate
from simulators.toy import LinearGaussianToy

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Three 16 MiB blocks allocated, written and freed (last first, so they merge into the top of the
# heap), ten times over; prints the minor page faults of the ten repeats.
FAULTS_OF_REPEATED_BLOCKS = """
import resource, sys
import numpy as np
if sys.argv[1] == "retain":
    from sbicluster.allocator import retain_freed_memory
    assert retain_freed_memory()
def cycle():
    a, b, c = (np.ones(2 * 1024 * 1024) for _ in range(3))
    del c, b, a
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_REPEATED_BLOCKS, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="the setting exists only for glibc's allocator")
def test_freed_blocks_are_reused_without_faulting_fresh_pages():
    pages_per_cycle = 3 * 16 * 1024 * 1024 // 4096
    plain, retained = _faults("plain"), _faults("retain")
    # the system's defaults return part of the 48 MiB each time, so the repeats fault pages again
    assert plain > pages_per_cycle // 2
    # kept in the process, the blocks are reused: (almost) no page is faulted twice
    assert retained < pages_per_cycle // 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mmap_threshold": 0}, "mmap_threshold"),
        ({"mmap_threshold": MAX_MMAP_THRESHOLD + 1}, "mmap_threshold"),
        ({"trim_threshold": 2**31}, "trim_threshold"),
    ],
)
def test_thresholds_outside_what_glibc_takes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        retain_freed_memory(**kwargs)


def test_runs_recorded_before_the_setting_existed_ran_without_it():
    old = TrainingConfig().to_dict()
    del old["retain_freed_memory"]
    assert upgrade_config_dict(old)["retain_freed_memory"] is False
    assert TrainingConfig().retain_freed_memory is True


@pytest.mark.parametrize("retain", [True, False])
def test_cpu_training_applies_the_setting_only_when_asked(monkeypatch, tmp_path, retain):
    calls = []
    monkeypatch.setattr(
        "sbicluster.training.loop.retain_freed_memory", lambda: calls.append(1) or True
    )
    config = TrainingConfig(
        steps=2, batch_size=16, val_size=16, val_every=2, device="cpu", retain_freed_memory=retain
    )
    model = train(LinearGaussianToy(), config, tmp_path / "run", progress=False)
    assert calls == ([1] if retain else [])
    assert model.card["training"]["config"]["retain_freed_memory"] is retain


def test_a_run_resumes_whatever_its_allocator_setting(monkeypatch, tmp_path):
    monkeypatch.setattr("sbicluster.training.loop.retain_freed_memory", lambda: True)
    first = TrainingConfig(
        steps=4, batch_size=16, val_size=16, val_every=2, device="cpu", retain_freed_memory=False
    )
    train(LinearGaussianToy(), first, tmp_path / "run", progress=False, stop_after_steps=2)
    resumed = TrainingConfig.from_dict({**first.to_dict(), "retain_freed_memory": True})
    model = train(LinearGaussianToy(), resumed, tmp_path / "run", resume=True, progress=False)
    assert model.card["training"]["steps_done"] == 4


def test_runs_recorded_before_the_fused_optimizer_existed_ran_without_it():
    old = TrainingConfig().to_dict()
    del old["fused_optimizer"]
    assert upgrade_config_dict(old)["fused_optimizer"] is False
    assert TrainingConfig().fused_optimizer is True


def test_the_fused_optimizer_gives_the_same_weights_to_rounding(tmp_path, one_torch_thread):
    weights = {}
    for fused in (False, True):
        config = TrainingConfig(
            steps=5, batch_size=32, val_size=32, val_every=5, device="cpu", fused_optimizer=fused
        )
        model = train(LinearGaussianToy(), config, tmp_path / f"run_{fused}", progress=False)
        weights[fused] = model.state_dict()
        assert model.card["training"]["config"]["fused_optimizer"] is fused
    for name, value in weights[False].items():
        if value.is_floating_point():
            torch.testing.assert_close(weights[True][name], value, rtol=1e-4, atol=1e-5)
    moved = [
        name
        for name, value in weights[False].items()
        if value.is_floating_point() and not torch.equal(weights[True][name], value)
    ]
    assert moved  # the two implementations did run (rounding differs somewhere)


def test_runs_recorded_before_the_validation_chunk_existed_validated_in_chunks_of_512():
    old = TrainingConfig().to_dict()
    del old["validation_chunk"]
    assert upgrade_config_dict(old)["validation_chunk"] == 512
    assert TrainingConfig().validation_chunk is None  # the batch size
    assert {"retain_freed_memory", "fused_optimizer", "validation_chunk"} <= SPEED_ONLY_FIELDS


def test_validation_terms_do_not_depend_on_the_chunk(one_torch_thread):
    simulator = LinearGaussianToy()
    config = TrainingConfig(device="cpu", seed=2)
    model = _build_model(simulator, config, [1.0] * len(simulator.bands), torch.device("cpu"))
    val = simulator.simulate(300, torch.Generator().manual_seed(4))
    terms = {c: validate(model, val, config.loss_weights, chunk=c) for c in (7, 64, 300, 512)}
    for chunk, got in terms.items():
        for name, value in terms[512].items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (chunk, name)
    assert model.training  # left in training mode


@pytest.mark.parametrize(("chunk", "used"), [(None, 16), (5, 5)])
def test_training_validates_in_chunks_of_the_batch_unless_told(monkeypatch, tmp_path, chunk, used):
    seen = []
    real = validate

    def recording(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs["chunk"])
        return real(*args, **kwargs)

    monkeypatch.setattr("sbicluster.training.loop.validate", recording)
    config = TrainingConfig(
        steps=4, batch_size=16, val_size=32, val_every=2, device="cpu", validation_chunk=chunk
    )
    model = train(LinearGaussianToy(), config, tmp_path / "run", progress=False)
    assert seen and set(seen) == {used}
    assert model.card["training"]["config"]["validation_chunk"] == chunk


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, "128"])
def test_a_bad_validation_chunk_is_refused_before_anything_is_written(tmp_path, chunk):
    config = TrainingConfig(steps=2, batch_size=16, val_size=16, device="cpu")
    config.validation_chunk = chunk
    with pytest.raises(InputError, match="validation chunk"):
        train(LinearGaussianToy(), config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError, match="validation chunk"):
        validate(None, None, {}, chunk=chunk)


def test_a_run_resumes_whatever_its_validation_chunk(tmp_path):
    first = TrainingConfig(steps=4, batch_size=16, val_size=32, val_every=2, device="cpu")
    train(LinearGaussianToy(), first, tmp_path / "run", progress=False, stop_after_steps=2)
    resumed = TrainingConfig.from_dict({**first.to_dict(), "validation_chunk": 8})
    model = train(LinearGaussianToy(), resumed, tmp_path / "run", resume=True, progress=False)
    assert model.card["training"]["steps_done"] == 4

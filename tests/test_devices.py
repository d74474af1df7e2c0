"""The CPU's name and instruction-set facts that gate bfloat16 training and label benchmarks."""

from __future__ import annotations

import pytest

from sbicluster import devices

ZEN2_LIKE = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
"""

SAPPHIRE_RAPIDS_LIKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_bf16 amx_tile amx_bf16
"""


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def write(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(devices, "CPUINFO", path)

    return write


def test_a_cpu_without_bf16_units_is_named_so(cpuinfo):
    cpuinfo(ZEN2_LIKE)
    assert devices.cpu_name() == "AMD EPYC"
    assert not devices.cpu_has_bf16()
    assert devices.cpu_vector_extensions() == ("avx", "avx2", "fma")
    assert devices.cpu_description() == "AMD EPYC (avx avx2 fma; no native bfloat16)"
    assert devices.device_name("cpu") == devices.cpu_description()


def test_a_cpu_with_bf16_units_is_named_so(cpuinfo):
    cpuinfo(SAPPHIRE_RAPIDS_LIKE)
    assert devices.cpu_has_bf16()
    assert devices.cpu_vector_extensions() == (
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "amx_bf16",
    )
    assert devices.cpu_description().endswith("; native bfloat16)")


def test_an_unreadable_cpuinfo_falls_back_to_plain_names(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "CPUINFO", tmp_path / "missing")
    assert devices.cpu_name() == "cpu"
    assert not devices.cpu_has_bf16()
    assert devices.cpu_vector_extensions() == ()
    assert devices.cpu_description() == "cpu"

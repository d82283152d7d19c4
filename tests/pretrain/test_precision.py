"""Training precision ``auto``: bf16 where the hardware computes it natively (the pretraining default)."""

import torch

from visionfm.engine import precision
from visionfm.engine.precision import bf16_in_cpuinfo, resolve_precision


def test_cpu_flags():
    sapphire = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\nbugs\t\t:\n"
    assert bf16_in_cpuinfo(sapphire) is True
    assert bf16_in_cpuinfo("flags\t\t: fpu avx2 avx512f\n") is False
    assert bf16_in_cpuinfo("flags\t\t: fpu avx512_bf16\n") is True  # Cooper Lake / Zen 4: AVX512-BF16 without AMX
    assert bf16_in_cpuinfo("model name\t: something\n") is None  # no flags line: ask torch instead


def test_auto_resolves_by_hardware(monkeypatch):
    cpu = torch.device("cpu")
    for fixed in ("fp32", "bf16", "fp16"):
        assert resolve_precision(fixed, cpu) == fixed  # an explicit choice is kept
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"  # emulated bf16 is slower than fp32: stay in fp32
    assert resolve_precision("auto", torch.device("meta")) == "fp32"


def test_pretraining_default_is_auto():
    from visionfm.pretrain import pretrain_config

    assert pretrain_config(data=["x"]).train.precision == "auto"
    assert pretrain_config(method="mae", data=["x"]).train.precision == "auto"

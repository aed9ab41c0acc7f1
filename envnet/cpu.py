"""Which fast path this CPU takes, decided once per process (and remembered in a small cache file).

bfloat16 autocast is only fast where the CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere
oneDNN emulates it and a training step is 4-6× *slower* than fp32 (benchmarks/README.md, on an AVX2
AMD EPYC). So training uses bf16 only when the CPU's flags say it is native **and** a short measured
probe agrees; everything else runs fp32. Inference is always fp32 (envnet/fast.py): bf16 moves
probabilities by more than the 1e-5 the fast path promises.

    from envnet import cpu
    cpu.plan()            # Plan(train_bf16=..., threads=..., reasons={...}, cpu=CpuInfo(...))
    cpu.resolve_bf16("auto", torch.device("cpu"))

The decision is pure logic over a `CpuInfo` and the probe's timings (`choose`), so it is tested with
the CPU's answer mocked both ways; `plan()` adds the real CPU, the probe and the caches.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch.nn import functional as F

from envnet import atomic
from envnet.data import CACHE_DIR
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.predict import predict
from envnet.spectra import cached_frequency_response, learned_spectrogram, mel_spectrogram

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo's names for native bf16 math
BF16_MIN_GAIN = 1.2  # bf16 must beat fp32 by this much in the probe: it costs precision, so it must pay
CACHE_FILE = CACHE_DIR / "cpu-plan.json"  # the one cache folder: $ENVNET_CACHE or ~/.cache/envnet
PLAN_VERSION = 1  # bump when the decision logic changes, so old cache files are ignored


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    capability: str  # torch's kernel level for this CPU: "AVX2", "AVX512", …
    cores: int

    @property
    def native_bf16(self) -> bool:
        return bool(NATIVE_BF16_FLAGS & self.flags)

    def key(self) -> str:
        """What the cached plan depends on: the CPU, its bf16 flags, torch's kernel level and version."""
        return "|".join([self.model, ",".join(sorted(NATIVE_BF16_FLAGS & self.flags)), self.capability,
                         str(self.cores), torch.__version__, str(PLAN_VERSION)])

    def summary(self) -> dict:
        simd = sorted(f for f in self.flags if f.startswith(("avx", "amx", "fma")))
        return {"model": self.model, "cores": self.cores, "torch_capability": self.capability,
                "native_bf16": self.native_bf16, "simd_flags": simd}


@dataclass(frozen=True)
class Plan:
    """The paths chosen for this machine, and why (`reasons`, one sentence per choice)."""

    train_bf16: bool
    threads: int
    reasons: dict[str, str] = field(default_factory=dict)
    probe: dict = field(default_factory=dict)  # the probe's timings in ms, when it ran
    cpu: CpuInfo | None = None

    def summary(self) -> dict:
        return {"train_precision": "bf16" if self.train_bf16 else "fp32", "inference_precision": "fp32",
                "threads": self.threads, "reasons": dict(self.reasons), "probe": dict(self.probe),
                "cpu": self.cpu.summary() if self.cpu else None}


def read_cpu() -> CpuInfo:
    """This machine's CPU: model name and flags from /proc/cpuinfo (Linux), torch's own checks elsewhere."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and model in ("", platform.processor(), platform.machine()):
                model = value.strip()
            elif name.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    # torch asks cpuid itself: this covers systems without /proc/cpuinfo (macOS, Windows).
    checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported",
              "avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported"}
    for flag, fn in checks.items():
        try:
            if getattr(torch.cpu, fn)():
                flags.add(flag)
        except (AttributeError, RuntimeError):
            pass
    return CpuInfo(model or "unknown CPU", frozenset(flags), torch.backends.cpu.get_cpu_capability(),
                   os.cpu_count() or 1)


def probe_bf16(batch: int = 2, repeats: int = 3) -> dict:
    """Milliseconds for one forward + backward of EnvNet's dominant layer (conv2: 40 → 40 channels,
    8 taps over 24,007 samples) in fp32 and under bf16 autocast; the best of `repeats`, interleaved."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 40, 24_007, generator=gen)
    w = (0.05 * torch.randn(40, 40, 8, generator=gen)).requires_grad_()
    best = {"fp32": float("inf"), "bf16": float("inf")}

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = F.conv1d(x, w)
        y.float().square().mean().backward()
        w.grad = None

    for bf16 in (False, True):  # warm-up: oneDNN builds its kernels on the first call
        step(bf16)
    for _ in range(repeats):
        for name, bf16 in (("fp32", False), ("bf16", True)):
            t0 = time.perf_counter()
            step(bf16)
            best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
    return best


THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def memory_pages(setting: str | None, kernel_mode: str | None) -> str:
    """Why big tensors live in 2 MB pages or 4 KB ones: `setting` is THP_MEM_ALLOC_ENABLE as this process
    started with it (envnet sets "1" unless the user chose), `kernel_mode` the kernel's choice in brackets in
    THP_MODE_FILE, None where there is none (not Linux)."""
    if setting is None or setting.strip().lower() in ("", "0", "false", "no", "off"):
        return "4 KB pages: THP_MEM_ALLOC_ENABLE is off"
    if kernel_mode in (None, "never"):
        return f"4 KB pages: the kernel has no transparent huge pages ({kernel_mode or 'not Linux'})"
    return (f"2 MB pages for tensors of 2 MB and more (THP_MEM_ALLOC_ENABLE={setting}, kernel '{kernel_mode}'): "
            "a training step took 1.7-1.9 times as long in 4 KB pages")


def _kernel_thp_mode() -> str | None:
    try:
        text = THP_MODE_FILE.read_text()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text and "]" in text else None


def choose(cpu: CpuInfo, probe: dict | None = None, threads: int | None = None) -> Plan:
    """The decision itself. `probe` holds probe_bf16's timings; it is consulted only where bf16 is native."""
    threads = threads or torch.get_num_threads()
    reasons = {"inference": "fp32 always: bf16 moves probabilities by more than the 1e-5 the fast path keeps",
               "threads": f"{threads} (PyTorch's default, one per core: measured faster than 1 on 2 cores, "
                          f"benchmarks/README.md)"}
    if not cpu.native_bf16:
        reasons["train"] = (f"fp32: no native bf16 on this CPU ({cpu.capability}; no avx512_bf16 or amx_bf16 "
                            "flag), where bf16 autocast is emulated and several times slower")
        return Plan(False, threads, reasons, {}, cpu)
    have = ", ".join(sorted(NATIVE_BF16_FLAGS & cpu.flags))
    if probe is None:
        reasons["train"] = f"bf16: the CPU has native bf16 ({have}); not measured"
        return Plan(True, threads, reasons, {}, cpu)
    gain = probe["fp32"] / probe["bf16"]
    use = gain >= BF16_MIN_GAIN
    reasons["train"] = (f"{'bf16' if use else 'fp32'}: the CPU has native bf16 ({have}) and the probe measured "
                        f"bf16 {gain:.1f}× as fast as fp32 ({probe['bf16']:.0f} vs {probe['fp32']:.0f} ms; "
                        f"needs ≥ {BF16_MIN_GAIN}×)")
    return Plan(use, threads, reasons, probe, cpu)


def _read_cache(key: str) -> dict | None:
    try:
        entry = json.loads(CACHE_FILE.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and {"fp32", "bf16"} <= entry.keys() else None


def _write_cache(key: str, probe: dict) -> None:
    try:
        data = json.loads(CACHE_FILE.read_text()) if CACHE_FILE.is_file() else {}
        data = data if isinstance(data, dict) else {}
        data[key] = probe
        atomic.write(CACHE_FILE, json.dumps(data, indent=1).encode())
    except (OSError, ValueError):
        pass  # a read-only home only costs the probe again next time


@lru_cache(maxsize=1)
def plan() -> Plan:
    """This machine's plan: computed once per process; the probe's result is kept in CACHE_FILE per CPU."""
    info = read_cpu()
    probe = None
    if info.native_bf16:
        probe = _read_cache(info.key())
        if probe is None:
            probe = probe_bf16()
            _write_cache(info.key(), probe)
    chosen = choose(info, probe)
    chosen.reasons["memory"] = memory_pages(os.environ.get("THP_MEM_ALLOC_ENABLE"), _kernel_thp_mode())
    return chosen


def resolve_bf16(setting: bool | str, device: torch.device | str = "cpu") -> bool:
    """TrainConfig.bf16 → whether to autocast: True/False as given; "auto" asks the plan on a CPU and
    the GPU itself on CUDA."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"bf16 must be True, False or 'auto', not {setting!r}")
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and plan().train_bf16


def describe() -> dict:
    """The plan and the CPU, as the benchmarks and the CLI report them."""
    return plan().summary()


__all__ = ["CpuInfo", "Plan", "choose", "describe", "memory_pages", "plan", "probe_bf16", "read_cpu", "resolve_bf16",
           "warm_up"]


def warm_up(model) -> None:
    """Do once, before the first visitor waits, what the first classification would otherwise pay for:
    the fused inference copy (envnet/fast.py), oneDNN's kernels at the batch sizes the Classify page
    uses, the mel filterbank, and the filters' frequency response (96 tones through the feature block).
    Everything lands in the caches the pages read; it changes no result."""
    classes = [str(i) for i in range(model.config.n_classes)]
    clip = 0.1 * torch.randn(5 * SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    predict(model, clip, classes)  # 10 crops
    predict(model, clip, classes, hop=8_000)  # the timeline's windows
    learned_spectrogram(model, clip[:WINDOW])
    mel_spectrogram(clip[:WINDOW])
    cached_frequency_response(model)

"""What the benchmarks share: the device and its measured matmul peaks, peak memory, FLOP counting, building
transformers' model and ours with the same weights, per-call caches, and output comparison.

``bench_core.py`` (inference) and ``bench_train.py`` (training steps) import this module; both time every
implementation in one process, interleaved, after the same warm-up, with the same thread count, so that the
ratios compare implementations and not moments of a shared machine.
"""

from __future__ import annotations

import copy
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perceiver_core import presets  # noqa: E402
from perceiver_core.convert import from_transformers, to_transformers_key  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------------ device
class Device:
    """The device, and the best matmul rates (GFLOP/s) seen on it during the run.

    fp32 on CPU has two GEMM libraries behind torch: ``torch.matmul`` calls MKL's sgemm and oneDNN
    (``torch.ops.mkldnn._linear_pointwise``), which on AMD CPUs runs about twice as fast. The fp32 peak used for
    "% of peak" is the faster of the two; both are reported. On CUDA the fp32 rate is IEEE fp32 (TF32 off, as
    torch's default for matmuls), and fp16 is measured too. ``size`` is the square GEMM edge (``None``: 2048 on
    CPU, 8192 on CUDA); the smoke modes pass a small one, since a CPU without native bf16 GEMMs runs 2048^3 in
    bf16 for minutes.
    """

    def __init__(self, name: str, size: int | None = None) -> None:
        self.name = name
        self.type = torch.device(name).type
        if self.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        self.size = size or (8192 if self.type == "cuda" else 2048)
        self.peaks = {"fp32 matmul": 0.0, "fp32 oneDNN": 0.0, "bf16 matmul": 0.0, "fp16 matmul": 0.0}

    @property
    def peak(self) -> dict[str, float]:
        """Best GFLOP/s per compute dtype name ("fp32", "bf16", "fp16"); 0 where not measured."""
        return {"fp32": max(self.peaks["fp32 matmul"], self.peaks["fp32 oneDNN"]), "bf16": self.peaks["bf16 matmul"],
                "fp16": self.peaks["fp16 matmul"]}

    def sync(self) -> None:
        if self.type == "cuda":
            torch.cuda.synchronize()

    def _rate(self, fn: Callable[[], object], n: int) -> float:
        fn()
        best = math.inf
        for _ in range(4):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            best = min(best, time.perf_counter() - start)
        return 2 * n ** 3 / best / 1e9

    def measure_peak(self, dtypes: tuple[str, ...] | list[str] = ("fp32", "bf16", "fp16")) -> dict[str, float]:
        """Best n^3 matmul rate (GFLOP/s) now, per kind; keeps the best seen over the run in ``self.peaks``.
        ``dtypes``: the compute dtypes to measure (a CPU without native bf16 takes minutes for the bf16 one)."""
        n = self.size
        a = torch.randn(n, n, device=self.name)
        b = torch.randn(n, n, device=self.name)
        now = {}
        if "fp32" in dtypes:
            now["fp32 matmul"] = self._rate(lambda: a @ b, n)
        if "bf16" in dtypes:
            ab, bb = a.bfloat16(), b.bfloat16()
            now["bf16 matmul"] = self._rate(lambda: ab @ bb, n)
        if self.type == "cuda" and "fp16" in dtypes:
            ah, bh = a.half(), b.half()
            now["fp16 matmul"] = self._rate(lambda: ah @ bh, n)
        elif self.type == "cpu" and "fp32" in dtypes and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            now["fp32 oneDNN"] = self._rate(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""), n)
        for key, value in now.items():
            self.peaks[key] = max(self.peaks[key], value)
        return now

    def describe_peaks(self) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in self.peaks.items() if v) + f" GFLOP/s ({self.size}^3)"

    def autocast(self, dtype: str):
        """The autocast context of a compute dtype name ("fp32": autocast disabled)."""
        return torch.autocast(self.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def rate_text(flops: float, seconds: float, peak_gflops: float, device_type: str) -> str:
    """Achieved rate and share of the dtype's matmul peak: GFLOP/s on CPU, TFLOP/s on CUDA."""
    if not flops or not seconds or math.isnan(seconds):
        return "n/a"
    gflops = flops / seconds / 1e9
    text = f"{gflops / 1e3:.1f} T" if device_type == "cuda" else f"{gflops:.0f}"
    return f"{text} ({100 * gflops / peak_gflops:.0f} %)" if peak_gflops else text


# ------------------------------------------------------------------------------------------------ memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so that RSS growth measures the next call."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PeakMemory:
    """Peak memory growth (bytes) during a block: CPU RSS sampled every 0.5 ms by a thread, or the CUDA
    allocator's peak (``max_memory_allocated``) above what was allocated before the block."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self):
        trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = _rss_bytes()
            self._high = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._high = max(self._high, _rss_bytes())
            time.sleep(0.0005)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._high, _rss_bytes()) - self._base


def mib(n_bytes: float | None) -> str:
    if n_bytes is None or (isinstance(n_bytes, float) and math.isnan(n_bytes)):
        return "n/a"
    return f"{n_bytes / 2**20:.0f}"


# ------------------------------------------------------------------------------------------------ FLOPs
def _cpu_flash_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _onednn_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def counted_flops(fn: Callable[[], object]) -> tuple[int, object]:
    """FLOPs of ``fn()`` by torch's FLOP formulas (matmul, conv, attention kernels and their backward passes;
    softmax, norms, elementwise and optimizer ops are not counted). A bare dispatch mode: FlopCounterMode's
    module tracker trips over parameters under no_grad. Dispatch modes see nothing under inference_mode: call
    inference under no_grad."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        mapping[torch.ops.mkldnn._linear_pointwise] = _onednn_linear_flops
    registry = FlopCounterMode(display=False, custom_mapping=mapping).flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = registry.get(func._overloadpacket)
            if formula is not None:
                Counter.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter():
        out = fn()
    return Counter.total, out


# ------------------------------------------------------------------------------------------------ models
def hf_config(cfg):
    import transformers

    values = {k: v for k, v in cfg.to_dict().items() if k not in ("architectures", "model_type")}
    return transformers.PerceiverConfig(**values)


def build_pair(preset_name: str, device: str, tiny: bool, head: str | None = None, **overrides):
    """(config, transformers model, our model with the same weights), both in eval mode on ``device``.

    ``head``: a head class name other than the preset's (e.g. ``PerceiverForSequenceClassification`` on the
    language preset's configuration)."""
    import transformers

    from perceiver_core.heads import HEADS

    preset = presets.get(preset_name)
    head = head or preset.head.__name__
    cfg = preset.config(tiny, **overrides)
    cfg.architectures = [head]
    torch.manual_seed(0)
    hf = getattr(transformers, head)(hf_config(cfg)).eval()
    ours = HEADS[head](cfg).eval()
    state, report = from_transformers(hf.state_dict(), {k: v.shape for k, v in ours.state_dict().items()}, head)
    if not report.ok:
        raise RuntimeError(report.describe())
    ours.load_state_dict(state)
    return cfg, hf.to(device), ours.to(device)


def compiled_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose ``forward`` is ``torch.compile``d (methods such as ``autoencode`` that call
    ``self.forward`` take the compiled graph too); the original stays eager."""
    clone = copy.deepcopy(model)
    clone.forward = torch.compile(clone.forward)
    return clone


def set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Activation checkpointing on / off for every module that has the switch (ours: encoder and decoder)."""
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = on


def supports_checkpointing(model: torch.nn.Module) -> bool:
    return any(hasattr(m, "gradient_checkpointing") for m in model.modules())


# ------------------------------------------------------------------------------------------------ caches
@dataclass
class CachePolicy:
    """What happens to per-call caches in timed calls.

    ``off`` (default): every dict attribute whose name ends in ``_cache`` on any of our modules (today the
    Fourier-feature grid cache of ``FourierPositionEncoding``) is cleared before each call, so ours recomputes
    position features every call, as transformers does. ``both``: ours keeps its caches and transformers'
    Fourier position encodings get the same memo (full grids only, keyed like ours).
    """

    mode: str = "off"

    def describe(self, found: dict[str, list[str]]) -> str:
        """One sentence; ``found`` maps each cache (``Class.attribute``) to the heads whose model has it."""
        where = "; ".join(f"{name} ({', '.join(heads)})" for name, heads in sorted(found.items())) or "none found"
        if self.mode == "off":
            return (f"per-call caches disabled for timed calls: ours' caches are cleared before every call ({where}); "
                    "transformers has none")
        return (f"per-call caches given to both sides: ours keeps its caches ({where}); transformers' Fourier "
                "position features of full grids are memoised the same way")

    @staticmethod
    def names(model: torch.nn.Module) -> list[str]:
        return sorted({f"{type(m).__name__}.{a}" for m, a in find_caches(model)})

    def wrap_ours(self, model: torch.nn.Module, fn: Callable[[], object]) -> Callable[[], object]:
        if self.mode != "off":
            return fn
        caches = find_caches(model)

        def run():
            for module, attr in caches:
                getattr(module, attr).clear()
            return fn()
        return run

    def prepare_hf(self, model: torch.nn.Module) -> None:
        if self.mode == "both":
            memoise_hf_positions(model)


def find_caches(model: torch.nn.Module | None) -> list[tuple[torch.nn.Module, str]]:
    """(module, attribute) of every dict-valued ``*_cache`` attribute of the model's modules."""
    if model is None:
        return []
    return [(m, name) for m in model.modules() for name, value in vars(m).items()
            if name.endswith("_cache") and isinstance(value, dict)]


def memoise_hf_positions(model: torch.nn.Module) -> int:
    """Memoise transformers' Fourier position features of full grids (``pos is None``); returns how many
    position-encoding modules were wrapped."""
    wrapped = 0
    for module in model.modules():
        if type(module).__name__ != "PerceiverFourierPositionEncoding" or hasattr(module, "_bench_memo"):
            continue
        module._bench_memo = {}
        original = module.forward

        def forward(index_dims, batch_size, device, dtype, pos=None, _orig=original, _memo=module._bench_memo):
            if pos is not None:
                return _orig(index_dims, batch_size, device, dtype, pos)
            key = (tuple(index_dims), batch_size, str(device), dtype, torch.is_inference_mode_enabled())
            if key not in _memo:
                _memo[key] = _orig(index_dims, batch_size, device, dtype)
            return _memo[key]
        module.forward = forward
        wrapped += 1
    return wrapped


# ------------------------------------------------------------------------------------------------ comparison
def flat(x) -> list[torch.Tensor]:
    if isinstance(x, dict):
        return [t for k in sorted(x) for t in flat(x[k])]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in flat(item)]
    return [x]


def max_abs_diff(a, b) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(flat(a), flat(b)))


def rel_err(approx, exact) -> float:
    """||approx - exact||_2 / ||exact||_2 over all outputs (dicts per modality: the worst modality)."""
    return max(((x.float().cpu() - y.float().cpu()).norm() / y.float().cpu().norm().clamp_min(1e-30)).item()
               for x, y in zip(flat(approx), flat(exact)))


@dataclass
class GradAgreement:
    """Gradients of ours against transformers', parameter by parameter (our names mapped by the converter).

    ``max_rel``: the worst ||g_ours - g_hf|| / ||g_hf|| over parameters whose transformers gradient is not
    negligible (norm >= ``NEGLIGIBLE`` x the largest parameter-gradient norm); ``worst``: where it occurs.
    Parameters whose true gradient is zero (e.g. the key biases of a softmax attention, which add the same
    constant to every score of a row) hold only rounding noise, so a relative error means nothing there: they
    are counted in ``negligible`` and their largest absolute difference is ``negligible_abs``, beside the
    largest gradient norm ``scale``. ``total_rel``: ||all differences|| / ||all transformers gradients||.
    A gradient missing on one side (a parameter the re-associated maths never uses) counts as zeros.
    """

    NEGLIGIBLE = 1e-6

    max_rel: float = 0.0
    worst: str = "-"
    total_rel: float = 0.0
    compared: int = 0
    negligible: int = 0
    negligible_abs: float = 0.0
    scale: float = 0.0

    def describe(self) -> str:
        return (f"max rel err {self.max_rel:.1e} ({self.worst}) over {self.compared} parameters; all together "
                f"{self.total_rel:.1e}; {self.negligible} with negligible gradients (max abs diff "
                f"{self.negligible_abs:.1e} vs largest gradient norm {self.scale:.1e})")


def grad_agreement(ours: torch.nn.Module, hf: torch.nn.Module, architecture: str) -> GradAgreement:
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    pairs = []
    for name, p in ours.named_parameters():
        q = hf_params.get(to_transformers_key(name, architecture))
        if q is None or (p.grad is None and q.grad is None):
            continue
        pairs.append((name, p.grad, q.grad))
    result = GradAgreement()
    result.scale = max((g.float().norm().item() for _, _, g in pairs if g is not None), default=0.0)
    diff_sq = ref_sq = 0.0
    for name, mine, ref in pairs:  # a missing gradient is a zero one (e.g. a bias that re-association skips)
        mine = torch.zeros_like(ref) if mine is None else mine
        ref = torch.zeros_like(mine) if ref is None else ref
        d = mine.float().cpu() - ref.float().cpu()
        diff_sq += d.norm().item() ** 2
        ref_sq += ref.float().norm().item() ** 2
        if ref.float().norm().item() < GradAgreement.NEGLIGIBLE * result.scale:
            result.negligible += 1
            result.negligible_abs = max(result.negligible_abs, d.abs().max().item())
            continue
        result.compared += 1
        err = d.norm().item() / ref.float().norm().item()
        if err > result.max_rel:
            result.max_rel, result.worst = err, name
    result.total_rel = math.sqrt(diff_sq) / max(math.sqrt(ref_sq), 1e-30)
    return result


# ------------------------------------------------------------------------------------------------ processes
def run_probe(script: Path, argv: list[str]) -> dict:
    """Run ``script --probe ...`` in a fresh process and return the JSON it prints after ``PROBE ``.

    Memory is measured this way on CPU: a long-lived process's RSS keeps freed heap pages of earlier runs,
    which blurs peak memory (transformers' own baseline table measured a fresh process per model too)."""
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    if done.returncode or not lines:
        raise RuntimeError(f"probe {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("PROBE "):])


def environment(dev: Device) -> str:
    """One line: date, device, library versions, threads and the matmul peaks seen."""
    import transformers

    if dev.type == "cuda":
        machine = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        machine = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                machine = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
        bf16 = "yes" if native else "no (bf16 GEMMs are emulated, slow)"
        machine += (f", CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {bf16}")
    return (f"date {datetime.datetime.now().isoformat(timespec='minutes')}; device {machine}; "
            f"{torch.get_num_threads()} torch threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
            f"torch {torch.__version__}; transformers {transformers.__version__}; python "
            f"{platform.python_version()}; best matmul rates seen: {dev.describe_peaks()}")


def logger(start: float) -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)
    return log


def publish(text: str, markdown: Path | None) -> int:
    """Print a benchmark's report (and write it to ``--markdown`` when given); the exit status of ``main``."""
    print(text)
    if markdown:
        markdown.write_text(text + "\n")
    return 0

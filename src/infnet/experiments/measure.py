"""In-process inference measurements: latency per batch and tensor memory.

Latency: wall time of `model(batch)` under `torch.no_grad()` in eval mode, after one
warm-up call, median over `reps` timings (the median ignores one-off stalls of a shared
machine); calls under 20 ms are timed in loops of about 20 ms.

Memory: torch's CPU allocator is invisible to `tracemalloc` (it allocates outside
Python's allocator), so tensors are counted directly: `TensorMemory` is a
TorchDispatchMode that sees every aten op's outputs, adds the bytes of each new storage
to a live total and subtracts them when the storage is freed (a weakref finalizer), and
keeps the peak. It counts what the forward allocates: parameters and the input batch
exist before it and are reported separately. Allocations are also classed by the op that
made them, for the memory breakdown of DESIGN.md / the source document 4.5.2:
    embeddings         aten.embedding outputs (the looked-up feature vectors)
    attention weights  outputs of softmax and of scaled_dot_product_attention kernels
    activations        every other intermediate
Peaks are per class (the largest live total of that class) and overall.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_ATTENTION_OPS = ("softmax", "scaled_dot_product", "flash_attention", "efficient_attention")


def _category(func: Any) -> str:
    name = str(func)
    if "embedding" in name:
        return "embeddings"
    if any(op in name for op in _ATTENTION_OPS):
        return "attention weights"
    return "activations"


class TensorMemory(TorchDispatchMode):
    """Live and peak bytes of the tensors allocated inside the `with` block."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.total_live = 0
        self.total_peak = 0
        self._seen: dict[int, tuple[str, int]] = {}

    def _free(self, key: int) -> None:
        entry = self._seen.pop(key, None)
        if entry is not None:
            cat, n = entry
            self.live[cat] -= n
            self.total_live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        cat = _category(func)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, n = storage.data_ptr(), storage.nbytes()
            if n == 0 or key in self._seen:
                continue  # a view or an in-place result: no new memory
            self._seen[key] = (cat, n)
            self.live[cat] = self.live.get(cat, 0) + n
            self.total_live += n
            self.peak[cat] = max(self.peak.get(cat, 0), self.live[cat])
            weakref.finalize(storage, self._free, key)
        self.total_peak = max(self.total_peak, self.total_live)
        return out


@torch.no_grad()
def latency_ms(fn: Callable[[], Any], reps: int = 5, min_seconds: float = 0.02) -> float:
    """Median wall time of fn() in milliseconds (see `latency_spread`)."""
    return latency_spread(fn, reps, min_seconds)[0]


def latency_spread(
    fn: Callable[[], Any], reps: int = 5, min_seconds: float = 0.02
) -> tuple[float, float, float]:
    """(median, fastest, slowest) wall time of fn() in milliseconds over `reps` timings,
    after one warm-up call, so a figure can draw the spread beside the median. A call
    shorter than `min_seconds` is timed as the mean of a loop of calls that lasts about
    that long (as `timeit` does), so scheduler noise does not swamp fast calls."""
    started = time.perf_counter()
    fn()
    inner = max(1, math.ceil(min_seconds / max(time.perf_counter() - started, 1e-9)))
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append(1000.0 * (time.perf_counter() - started) / inner)
    return statistics.median(times), min(times), max(times)


@torch.no_grad()
def peak_memory(fn: Callable[[], Any]) -> TensorMemory:
    """The tensor memory fn() allocates (peak per class and overall, in bytes)."""
    with TensorMemory() as mem:
        result = fn()
        del result
    return mem


def parameter_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of the embedding tables and of every other parameter."""
    embedding = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    sizes = {"embedding tables": 0, "parameters": 0}
    for p in model.parameters():
        sizes["embedding tables" if id(p) in embedding else "parameters"] += (
            p.numel() * p.element_size()
        )
    return sizes


def counted_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of fn() as torch.utils.flop_counter counts them: matrix products, 2 FLOPs per
    multiply-add; elementwise work is not counted. Scaled-dot-product attention runs its
    math kernel here, whose products the counter sees (it has no formula for the fused CPU
    kernel, so the n x n products of full attention would count as nothing)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # with autograd on: the counter's module tracker needs grad functions
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops()


def forward_flops(model: torch.nn.Module, batch: Any) -> float:
    """Forward FLOPs per sample of `model(batch)` in eval mode (`counted_flops`)."""
    model.eval()
    return counted_flops(lambda: model(batch)) / len(batch)

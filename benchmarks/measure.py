"""Timing and memory helpers shared by the benchmarks.

Times are wall clock around a call that ends with a device sync (`block_until_ready` for JAX,
`torch.cuda.synchronize` for PyTorch on GPU). Memory: on GPU the allocators' peak counters (JAX
`memory_stats()["peak_bytes_in_use"]`, torch `max_memory_allocated`); on CPU the process RSS sampled
every few milliseconds while a call runs (`PeakRSS`), reported as the growth over the RSS before it,
next to XLA's own `memory_analysis()` of the compiled program.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def rss_bytes() -> int:
    """Resident set size of this process, bytes (from /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakRSS:
    """Context manager: the highest RSS seen while the block runs (sampled every `interval` s).

    Attributes after exit: start (RSS at entry), peak (highest RSS), growth = peak - start.
    """

    def __init__(self, interval: float = 0.002):
        self.interval, self.start, self.peak = interval, 0, 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn (fn must return only after the device is done)."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(times: list[float]) -> dict:
    """median / min / max / all of a list of seconds."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "times_s": times}


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| in float64 (Frobenius)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def jax_memory_analysis(compiled) -> dict:
    """XLA's static memory analysis of a compiled executable, bytes (empty where unsupported)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return {}
    if m is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
    out = {f: int(getattr(m, f, 0)) for f in fields}
    out["total_bytes"] = (
        out["argument_size_in_bytes"] + out["output_size_in_bytes"] + out["temp_size_in_bytes"]
    )
    return out


def jax_device_peak() -> int | None:
    """Peak bytes in use on the first JAX device since start (GPU/TPU), None on CPU."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0))


def gemm_tflops(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """Best-of-`repeats` rate of one jitted [n, n] x [n, n] matmul, TFLOP/s: the device's practical
    matmul peak under the current load (on CPU the nominal clock can be off by the boost factor)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    precision = jax.lax.Precision.HIGHEST if dtype == "float32" else None
    f = jax.jit(lambda x, y: jnp.dot(x, y, precision=precision)).lower(a, a).compile()
    f(a, a).block_until_ready()
    best = min(time_calls(lambda: f(a, a).block_until_ready(), repeats))
    return 2 * n**3 / best / 1e12


def machine_info() -> dict:
    """Host, accelerator and library versions, plus the load average (other processes skew CPU timings)."""
    import jax

    info = {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_platform": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "loadavg": list(os.getloadavg()),
    }
    try:
        import diffusers
        import torch

        info.update(
            torch=torch.__version__, diffusers=diffusers.__version__, torch_threads=torch.get_num_threads()
        )
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"

"""How the test suite compiles: the XLA settings every test process (and subprocess) runs under.

Most of the suite's time is XLA:CPU compiling tiny programs (tests/test_transforms.py: 155 s cold,
34 s with every program already compiled), so the suite

* shares one persistent compilation cache across its processes (xdist workers and the
  subprocesses tests start inherit `JAX_COMPILATION_CACHE_DIR`): a program compiled by one test is
  loaded, not recompiled, by the next that builds the same HLO; entries are keyed by the HLO, the
  compile options and the jax/XLA versions, so a hit is the identical executable;
* compiles with LLVM at -O0 (`--xla_backend_optimization_level=0`: 155 s -> 85 s on that module).
  HLO optimisation (fusion, layout, buffer assignment) is unchanged; the parity tests pass under it
  at their float32 tolerances. `XLA_FLAGS=--xla_backend_optimization_level=2 ./test.sh` runs the
  suite with XLA's default code generation (any optimisation level you set is kept).
"""

from __future__ import annotations

import os
import tempfile

FAST_COMPILE = "--xla_backend_optimization_level=0"
CACHE_VARS = {  # cache every program, however quick to compile or small
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def configure(environ=os.environ) -> str | None:
    """Sets the suite's XLA flags and compilation cache in `environ` (before JAX is imported).

    Returns the cache folder when this call created it (the caller removes it at the end), None
    when one was already set (an outer pytest process's, or the user's own)."""
    flags = environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in flags:
        environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()
    for name, value in CACHE_VARS.items():
        environ.setdefault(name, value)
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cosjax-test-jax-cache-")
    return environ["JAX_COMPILATION_CACHE_DIR"]


def device_env(devices: int) -> dict[str, str]:
    """os.environ for a subprocess with `devices` fake CPU devices, the suite's flags kept."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return dict(
        os.environ,
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
        JAX_PLATFORMS="cpu",
    )

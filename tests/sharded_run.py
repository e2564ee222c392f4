"""Runs one sharded-vs-unsharded comparison on 8 fake CPU devices; prints a JSON line.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_run.py dit data=2,fsdp=4

Used by test_parallel.py (the device count must be set before JAX starts, hence a subprocess).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import cosjax as cj  # noqa: E402
from cosjax import transforms as T  # noqa: E402
from cosjax.interventions.cross_attention import ablate_cross_attention  # noqa: E402
from cosjax.parallel import make_mesh, shard_params  # noqa: E402
from cosjax.sampling.sampler import Conditioning, SamplerSettings, make_sampler  # noqa: E402

# 4 heads so that context x tensor up to 4 divides them; latent 3 x 6 x 6 -> 3*3*3 = 27 tokens,
# which needs padding for context 2 and 4.
CONFIG = cj.DiTConfig(
    dim=96,
    ffn_dim=128,
    num_heads=4,
    num_layers=3,
    in_dim=36,
    out_dim=16,
    model_type="i2v",
    text_dim=32,
    freq_dim=32,
)
SHAPE = (1, 16, 3, 6, 6)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def inputs():
    k = jax.random.split(jax.random.key(0), 4)
    cond = Conditioning(
        context=jax.random.normal(k[0], (1, 7, 32)),
        negative=jax.random.normal(k[1], (1, 3, 32)),
        y=jax.random.normal(k[2], (1, 20, *SHAPE[2:])),
        latent_shape=SHAPE,
    )
    return cond, k[3]


def experts():
    return {
        "high_noise": cj.init_params(CONFIG, jax.random.key(1)),
        "low_noise": cj.init_params(CONFIG, jax.random.key(2)),
    }


def run(what: str, mesh_spec: str) -> dict:
    sizes = {k: int(v) for k, v in (kv.split("=") for kv in mesh_spec.split(","))}
    mesh = make_mesh(**sizes)
    params = experts()
    cond, key = inputs()
    settings = SamplerSettings(
        steps=4, shift=5.0, guide_scale=(5.0, 4.0), boundary=0.875, grid="diffsynth", solver="euler"
    )
    if what == "dit":
        module = cj.WanDiT(CONFIG)
        x = jax.random.normal(key, (2, *SHAPE[1:]))
        ctx = jnp.concatenate([cond.context, cond.context * 0.5])
        y, t = jnp.concatenate([cond.y, cond.y]), jnp.array([900.0, 300.0])
        f = jax.jit(lambda p, x: module.apply({"params": p}, x, t, ctx, y))
        ref = f(params["high_noise"], x)
        with jax.set_mesh(mesh):
            sharded = shard_params(params["high_noise"], mesh)
            out = f(sharded, x)
        return {"rel": rel(out, ref), "param_sharding": str(sharded["blocks"]["fc1"]["kernel"].sharding.spec)}
    if what in ("sampler", "ensemble"):

        def build(p):
            s = make_sampler(CONFIG, p, settings)
            return T.ensemble(T.trace_x0(s), seeds=2, layers=[1], steps=[0]) if what == "ensemble" else s

        ref = jax.jit(build(params))(cond, key)
        with jax.set_mesh(mesh):
            sharded = {name: shard_params(p, mesh) for name, p in params.items()}
            out = jax.jit(build(sharded))(cond, key)
        result = {"rel": rel(out.latents, ref.latents)}
        if what == "ensemble":
            result["rel_x0"] = rel(out.trace.x0, ref.trace.x0)
            result["seed_axis_spec"] = (
                str(out.latents.sharding.spec[0]) if out.latents.sharding.spec else "None"
            )
        return result
    if what == "interventions":  # token-shaped plan data (swap source, captures) on a padded sequence
        plain = make_sampler(CONFIG, params, settings)
        source = jax.jit(T.capture(plain, [1], [1], "hidden"))(cond, key).trace.hidden[:, 0] + 0.5

        def build(p):
            s = ablate_cross_attention(make_sampler(CONFIG, p, settings), [0], [2])
            s = T.swap_layer(T.swap_layer(s, 1, 1, source), 2, 1, source[:, ::-1])
            return T.capture(T.capture(s, [0, 2], [0, 3]), [1, 2], [1, 2], what="hidden")

        ref = jax.jit(build(params))(cond, key)
        with jax.set_mesh(mesh):
            sharded = {name: shard_params(p, mesh) for name, p in params.items()}
            out = jax.jit(build(sharded))(cond, key)
        return {
            "rel": rel(out.latents, ref.latents),
            "rel_energy": rel(out.trace.energy, ref.trace.energy),
            "rel_hidden": rel(out.trace.hidden, ref.trace.hidden),
            "hidden_shape": list(out.trace.hidden.shape),
        }
    if what == "restore":
        return restore(sizes)
    raise ValueError(what)


def _status(field: str) -> int:
    import re

    return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def restore(target_sizes: dict) -> dict:
    """Saves a mid-size expert sharded on one mesh, restores it onto `target_sizes` straight into
    that mesh's shardings, and measures the transient host memory of the restore."""
    import ctypes
    import gc
    import tempfile

    from cosjax.parallel import param_shardings
    from cosjax.weights.convert import save_dit
    from cosjax.weights.loading import load_dit

    config = cj.DiTConfig(
        dim=512, ffn_dim=2048, num_heads=4, num_layers=8, in_dim=16, out_dim=16, text_dim=256
    )
    params = shard_params(cj.init_params(config, jax.random.key(0)), make_mesh(fsdp=4, tensor=2))
    expert_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
    folder = os.path.join(tempfile.mkdtemp(), "ckpt")
    save_dit(folder, config, {"dit": params})
    warm = load_dit(folder, mesh=make_mesh(fsdp=8))  # warm-up: orbax code paths and thread pools
    jax.block_until_ready(warm.params)
    del warm
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    mesh = make_mesh(**target_sizes)
    open("/proc/self/clear_refs", "w").write("5")
    base = _status("VmRSS")
    loaded = load_dit(folder, mesh=mesh)
    jax.block_until_ready(loaded.params)
    peak = _status("VmHWM")
    want = param_shardings(params, mesh)
    same_values = all(
        bool(np.array_equal(np.asarray(a), np.asarray(b)))
        for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params), strict=True)
    )
    same_shardings = all(
        a.sharding.is_equivalent_to(s, a.ndim)
        for a, s in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(want), strict=True)
    )
    # On CPU the "devices" live in host memory: subtract what the restored shards themselves occupy
    # (replicas included) to get the restore's own host overhead.
    device_bytes = sum(
        s.data.nbytes for leaf in jax.tree.leaves(loaded.params) for s in leaf.addressable_shards
    )
    return {
        "expert_bytes": expert_bytes,
        "device_bytes": device_bytes,
        "overhead": peak - base - device_bytes,
        "same_values": same_values,
        "same_shardings": same_shardings,
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], sys.argv[2])))

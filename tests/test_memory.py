"""The memory planner against XLA's compiled memory analysis, its error message, parameter sharding.

The single-device forward of small DiTs is lowered with abstract parameters (`jax.eval_shape`; no
weights are allocated) and compiled on CPU; `memory_analysis()` gives argument + temp + output bytes,
which `MemoryPlan.forward_peak` must match within 20%. XLA:CPU's YNNPACK fusion is switched off so
that the attention logits are materialised as XLA does on GPU/TPU (see `cosjax.memory.CALIBRATION`).
The sharded check runs this file as a script on 8 fake CPU devices (the device count must be set
before JAX starts).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.xla import device_env
from jax.sharding import AbstractMesh, NamedSharding

from cosjax.configs import DiTConfig, get_preset
from cosjax.memory import GiB, check_fits, latent_grid, plan_memory, plan_preset
from cosjax.models.dit import WanDiT, abstract_params
from cosjax.parallel import AXES, param_spec

# XLA:CPU otherwise fuses QK^T -> softmax -> PV into one YNNPACK kernel and never writes the logits
MATERIALISE_ATTENTION = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _dit(dim, heads, layers, model_type="t2v"):
    in_dim, out_dim = {"t2v": (16, 16), "i2v": (36, 16), "ti2v": (48, 48)}[model_type]
    return DiTConfig(
        dim=dim,
        ffn_dim=4 * dim,
        num_heads=heads,
        num_layers=layers,
        in_dim=in_dim,
        out_dim=out_dim,
        model_type=model_type,
    )


# (id, config, dtype, frames, height, width, cfg): width, tokens, batch/CFG, dtype and model type vary
CASES = [
    ("d512-L1024-cfg-f32", _dit(512, 4, 4), jnp.float32, 13, 256, 256, True),
    ("d256-L2048-f32", _dit(256, 2, 2), jnp.float32, 29, 256, 256, False),
    ("d1024-L256-bf16", _dit(1024, 8, 4), jnp.bfloat16, 1, 256, 256, False),
    ("ti2v-d512-L1024-cfg-bf16", _dit(512, 4, 4, "ti2v"), jnp.bfloat16, 13, 512, 512, True),
    ("i2v-d384-L768-cfg-f32", _dit(384, 3, 3, "i2v"), jnp.float32, 5, 256, 384, True),
]


def _xla_forward_bytes(config: DiTConfig, dtype, batch: int, grid: tuple[int, int, int]) -> int:
    """argument + temp + output bytes of the compiled single-device forward (abstract inputs only)."""
    f32 = jnp.float32
    module = WanDiT(config, dtype=dtype, param_dtype=dtype)
    pt, ph, pw = config.patch_size
    tokens = grid[0] // pt * (grid[1] // ph) * (grid[2] // pw)
    i2v, ti2v = config.model_type == "i2v", config.model_type == "ti2v"
    x = jax.ShapeDtypeStruct((batch, config.out_dim if i2v else config.in_dim, *grid), f32)
    t = jax.ShapeDtypeStruct((batch, tokens) if ti2v else (batch,), f32)
    context = jax.ShapeDtypeStruct((batch, config.text_len, config.text_dim), f32)
    y = jax.ShapeDtypeStruct((batch, config.in_dim - config.out_dim, *grid), f32) if i2v else None

    def forward(params, x, t, context, y):
        return module.apply({"params": params}, x, t, context, y)

    lowered = jax.jit(forward).lower(abstract_params(config, dtype), x, t, context, y)
    stats = lowered.compile(compiler_options=MATERIALISE_ATTENTION).memory_analysis()
    return stats.argument_size_in_bytes + stats.temp_size_in_bytes + stats.output_size_in_bytes


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_single_device_estimate_matches_xla(case):
    name, config, dtype, frames, height, width, cfg = case
    plan = plan_memory(config, 1, frames, height, width, None, dtype, dtype, cfg=cfg, batch=1, platform="cpu")
    xla = _xla_forward_bytes(config, dtype, plan.batch_per_device, plan.latent_grid)
    ratio = plan.forward_peak / xla
    print(
        f"{name}: L={plan.tokens} b={plan.batch_per_device} estimate {plan.forward_peak / 2**20:.1f} MiB, "
        f"XLA {xla / 2**20:.1f} MiB, ratio {ratio:.3f} (peak in {plan.peak_phase})"
    )
    assert abs(ratio - 1) <= 0.2


def test_a14b_720p_on_16gib_raises_with_a_fix():
    plan = plan_preset("wan2.2-i2v-a14b")  # two experts, 81 frames, 1280x720, CFG, one device
    assert plan.tokens == 75600 and plan.num_experts == 2
    with pytest.raises(ValueError) as err:
        check_fits(plan, 16 * GiB)
    message = str(err.value)
    print(message)
    assert "16.0 GiB" in message and "attn_scores" in message
    assert "fsdp=" in message and "context=" in message and "flash" in message
    # the combined setting it names really fits
    mesh = dict(
        zip(
            AXES,
            map(int, re.search(r"data=(\d+), fsdp=(\d+), context=(\d+), tensor=(\d+)", message).groups()),
            strict=True,
        )
    )
    fixed = plan_preset(
        "wan2.2-i2v-a14b", mesh, attention="flash", param_dtype="bfloat16", compute_dtype="bfloat16"
    )
    assert fixed.total <= 16 * GiB


def test_message_names_the_smallest_context_and_fsdp():
    budget = 80 * GiB  # Wan2.1 1.3B at 480p with XLA attention: the logits do not fit one device
    plan = plan_preset("wan2.1-t2v-1.3b")
    with pytest.raises(ValueError) as err:
        check_fits(plan, budget)
    heads = plan.config.num_heads
    smallest = next(
        k
        for k in range(1, heads + 1)
        if heads % k == 0 and plan_preset("wan2.1-t2v-1.3b", {"context": k}).total <= budget
    )
    assert f"context={smallest} " in str(err.value) and "attention='flash'" in str(err.value)

    budget = 24 * GiB  # TI2V-5B in float32 with flash attention: the parameters do not fit
    kwargs = dict(attention="flash", param_dtype="float32", compute_dtype="float32")
    with pytest.raises(ValueError) as err:
        check_fits(plan_preset("wan2.2-ti2v-5b", **kwargs), budget)
    smallest = next(
        f for f in (2, 4, 8, 16) if plan_preset("wan2.2-ti2v-5b", {"fsdp": f}, **kwargs).total <= budget
    )
    assert f"fsdp={smallest} " in str(err.value) and "bfloat16" in str(err.value)

    fits = plan_preset("wan2.1-t2v-1.3b", attention="flash")
    assert check_fits(fits, budget) is fits


def test_parameter_bytes_divide_over_fsdp_and_tensor():
    config = get_preset("wan2.2-i2v-a14b").dit
    params = abstract_params(config, jnp.bfloat16)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    expert = sum(leaf.size * 2 for _, leaf in leaves)
    block = sum(leaf.size * 2 for path, leaf in leaves if path[0].key == "blocks") // config.num_layers

    one = plan_preset("wan2.2-i2v-a14b")
    assert one.parameters == 2 * expert  # both experts resident
    for fsdp in (8, 16):
        plan = plan_preset("wan2.2-i2v-a14b", {"fsdp": fsdp})
        # 1/fsdp of both experts, up to the small leaves param_spec keeps replicated (norm scales,
        # o/fc2 biases, modulation: ~80k values per layer, +0.2% at fsdp=8, +0.5% at fsdp=16)
        assert 2 * expert / fsdp <= plan.parameters <= 1.01 * 2 * expert / fsdp
        assert plan.layer_weights == block  # the all-gathered block, in full
    # data and context do not shard parameters
    assert plan_preset("wan2.2-i2v-a14b", {"data": 2, "context": 4}).parameters == 2 * expert

    # exactly the shard shapes `param_spec` gives (non-divisible axes replicated), for uneven meshes too
    for sizes in ((1, 4, 1, 2), (1, 3, 1, 1), (2, 16, 2, 2)):
        mesh = AbstractMesh(sizes, AXES)
        expected = 0
        for path, leaf in leaves:
            names = tuple(k.key for k in path)
            shard = NamedSharding(mesh, param_spec(names, leaf.shape, mesh)).shard_shape(leaf.shape)
            expected += int(np.prod(shard)) * 2
        assert plan_preset("wan2.2-i2v-a14b", dict(zip(AXES, sizes, strict=True))).parameters == 2 * expected


def test_geometry_and_validation():
    assert latent_grid(81, 720, 1280, (4, 8, 8)) == (21, 90, 160)
    assert plan_preset("wan2.2-ti2v-5b").tokens == 31 * 22 * 40  # 121 frames, 1280x704, stride 4x16x16
    plan = plan_preset("wan2.2-i2v-a14b", {"data": 2, "context": 8})
    assert (plan.batch_per_device, plan.tokens_per_device, plan.heads_per_device) == (1, 9450, 5)
    with pytest.raises(ValueError, match="frames must be 4 k \\+ 1"):
        plan_preset("wan2.1-t2v-1.3b", frames=80)
    with pytest.raises(ValueError, match="num_heads \\(12\\) divisible"):
        plan_preset("wan2.1-t2v-1.3b", {"context": 8})
    with pytest.raises(ValueError, match="unknown mesh axis"):
        plan_preset("wan2.1-t2v-1.3b", {"pipeline": 2})


# (mesh, what the per-device program must show): parameters and inputs as the plan says, and the
# plan an upper bound of the per-device peak (GSPMD shards some activations the model keeps whole)
SHARDED_MESHES = ({"fsdp": 8}, {"fsdp": 2, "context": 4}, {"data": 2, "context": 2, "tensor": 2})
SHARDED_CASE = (_dit(512, 4, 4), 13, 256, 256)  # L = 1024 tokens, CFG batch 2, float32


def _sharded_report(meshes=SHARDED_MESHES) -> list[dict]:
    """Compiles the forward under each of `meshes` (8 fake CPU devices); per-device bytes."""
    from jax.sharding import PartitionSpec as P

    from cosjax.parallel import make_mesh, param_shardings

    config, frames, height, width = SHARDED_CASE
    grid = latent_grid(frames, height, width, (4, 8, 8))
    module = WanDiT(config)
    rows = []
    for sizes in meshes:
        full = {a: sizes.get(a, 1) for a in AXES}
        mesh = make_mesh(**full, devices=jax.devices()[: int(np.prod(list(full.values())))])
        params = abstract_params(config)
        params = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            params,
            param_shardings(params, mesh),
        )
        by_data = NamedSharding(mesh, P("data"))
        x = jax.ShapeDtypeStruct((2, config.in_dim, *grid), jnp.float32, sharding=by_data)
        t = jax.ShapeDtypeStruct((2,), jnp.float32, sharding=by_data)
        text = jax.ShapeDtypeStruct((2, config.text_len, config.text_dim), jnp.float32, sharding=by_data)
        with jax.set_mesh(mesh):
            lowered = jax.jit(lambda p, x, t, c: module.apply({"params": p}, x, t, c)).lower(
                params, x, t, text
            )
            stats = lowered.compile(compiler_options=MATERIALISE_ATTENTION).memory_analysis()
        rows.append(
            dict(
                mesh=full,
                inputs_outputs=stats.argument_size_in_bytes + stats.output_size_in_bytes,
                total=stats.argument_size_in_bytes + stats.temp_size_in_bytes + stats.output_size_in_bytes,
            )
        )
    return rows


def test_sharded_per_device_bytes():
    env = device_env(8)
    proc = subprocess.run(
        [sys.executable, __file__, "--sharded"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config, frames, height, width = SHARDED_CASE
    for row in json.loads(proc.stdout.strip().splitlines()[-1]):
        plan = plan_memory(
            config, 1, frames, height, width, row["mesh"], "float32", "float32", platform="cpu"
        )
        io = row["inputs_outputs"] / (plan.parameters + plan.forward_io)
        ratio = plan.forward_peak / row["total"]
        print(f"{row['mesh']}: arguments + output = {io:.4f} x the plan's, estimate / XLA peak {ratio:.3f}")
        assert abs(io - 1) <= 0.01
        assert 1.0 <= ratio <= 1.35


if __name__ == "__main__" and sys.argv[1:2] == ["--sharded"]:  # optional JSON list of meshes
    print(json.dumps(_sharded_report(json.loads(sys.argv[2]) if sys.argv[2:] else SHARDED_MESHES)))

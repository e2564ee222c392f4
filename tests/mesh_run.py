"""All six experiments through `cosjax run` on 8 fake CPU devices, with `--mesh SPEC` or without.

    python tests/mesh_run.py MODEL BENCH OUT data=2,fsdp=2,context=2     # OUT/mesh/NAME + the probe
    python tests/mesh_run.py MODEL BENCH OUT none                         # OUT/single/NAME

The mesh arm writes OUT/mesh/NAME run folders and prints a JSON report of what the test
checks in this process: each DiT leaf's sharding against the planner's, the VAE and text encoder
placement, the conditioning's and outputs' devices, and the dtypes of every matmul the sampler
traces. Used by test_mesh_experiments.py (the device count must be set before JAX starts).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

# Overrides per experiment (2 steps, 1 case per task; each experiment's smallest meaningful sweep).
EXPERIMENTS = {
    "trajectory": [],
    "noise-perturbation": [],
    "information-flow": ["perturb_steps=1"],
    "layer-energy": ["energy_steps=0,1"],
    "latent-swap": ["swap_steps=0,1"],
    "ensemble": ["seeds=2"],
}


def dots(jaxpr, num_layers: int, in_layers: bool = False):
    """(inside a layer scan, operand dtypes) of every dot_general, nested jaxprs included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield in_layers, tuple(str(v.aval.dtype) for v in eqn.invars)
        inner = in_layers or (eqn.primitive.name == "scan" and eqn.params["length"] == num_layers)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from dots(sub, num_layers, inner)


def on_mesh(tree, mesh) -> bool:
    devices = set(mesh.devices.flat)
    return all(leaf.sharding.device_set == devices for leaf in jax.tree.leaves(tree))


def probe(model: str, bench: str, out: str, spec: str) -> dict:
    """Prepares a run on the mesh as `cosjax run` does and inspects placement and dtypes."""
    from cosjax.memory import parameter_bytes, plan_memory
    from cosjax.parallel import param_spec
    from experiments import common, trajectory

    config = trajectory.Config(data=f"vbvr-bench:{bench}", cases=1, steps=2)
    with common.using_mesh(spec):
        setup = common.prepare("trajectory", config, model, os.path.join(out, "probe"))
    mesh, pipe = setup.mesh, setup.subject.pipe
    sizes = dict(mesh.shape)
    plan = plan_memory(mesh_shape=sizes, **setup.subject.memory_inputs(setup.cases, setup.settings))
    wrong, per_device = [], {d.id: 0 for d in mesh.devices.flat}
    for expert, params in pipe.dit.experts.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            names = tuple(k.key for k in path)
            want = param_spec(names, leaf.shape, mesh)
            if leaf.sharding.spec != want or leaf.dtype != np.dtype("bfloat16"):
                wrong.append(f"{expert}/{'/'.join(names)}: {leaf.sharding.spec} {leaf.dtype}, want {want}")
            for shard in leaf.addressable_shards:
                per_device[shard.device.id] += shard.data.nbytes
    expert_bytes, _ = parameter_bytes(setup.subject.config, "bfloat16", sizes)

    sampler = setup.sampler()
    cond = common.condition(setup, setup.cases[:1])  # VBVR samples run one per batch
    key = common.batch_key(setup, setup.cases[:1])
    traced = list(dots(jax.make_jaxpr(sampler)(cond, key).jaxpr, setup.subject.config.num_layers))
    result = jax.jit(sampler)(cond, key)
    setup.writer.close()
    return {
        "mesh": sizes,
        "wrong_leaves": wrong,
        "leaves": sum(len(jax.tree.leaves(p)) for p in pipe.dit.experts.values()),
        "param_bytes_per_device": sorted(set(per_device.values())),
        "planned_param_bytes": plan.parameters,
        "planned_expert_bytes": expert_bytes,
        "vae_replicated": on_mesh(pipe.vae.params, mesh)
        and all(a.sharding.is_fully_replicated for a in jax.tree.leaves(pipe.vae.params)),
        "text_encoder_replicated": on_mesh(pipe.text_encoder.params, mesh)
        and all(a.sharding.is_fully_replicated for a in jax.tree.leaves(pipe.text_encoder.params)),
        "cond_on_mesh": on_mesh(cond, mesh),
        "latents_replicated": result.latents.sharding.is_fully_replicated and on_mesh(result.latents, mesh),
        "layer_dots": [d for inside, d in traced if inside],
        "other_dots": [d for inside, d in traced if not inside],
    }


def main(model: str, bench: str, out: str, spec: str) -> dict:
    """spec "none": the one-device arm (OUT/single); otherwise the mesh arm (OUT/mesh) and the probe."""
    from cosjax.cli import main as cli

    arm, mesh = ("single", []) if spec == "none" else ("mesh", ["--mesh", spec])
    base = ["--model", model, "--data", f"vbvr-bench:{bench}", "--quiet", "cases=1", "steps=2", *mesh]
    for name, extra in EXPERIMENTS.items():
        start = time.perf_counter()
        rc = cli(["run", name, "--out", os.path.join(out, arm, name), *base, *extra])
        print(f"{name} ({arm}): {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if rc != 0:
            raise SystemExit(f"cosjax run {name} ({arm}) exited with {rc}")
    return {} if spec == "none" else probe(model, bench, out, spec)


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))

"""One of two processes of a multi-host run over loopback (4 fake CPU devices each, 8 global).

    python tests/multiprocess_run.py PROCESS_ID PORT OUT_DIR

Both processes run the same sharded sampler on a data=2 x fsdp=4 mesh spanning them; process 0 also
runs it unsharded on one local device and writes the comparison to OUT_DIR/result.json. Both call the
TensorBoard writer on OUT_DIR/logs; only process 0 may write. Used by test_parallel.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")  # the test passes its own
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402


def to_global(tree, shardings):
    """Host values identical on every process -> global arrays with the given shardings."""

    def one(value, sharding):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return jax.tree.map(one, tree, shardings)


def main(process_id: int, port: int, out: Path) -> None:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    sys.path.insert(0, str(Path(__file__).parent))
    from sharded_run import CONFIG, experts, inputs

    from cosjax.parallel import make_mesh, param_shardings
    from cosjax.sampling.sampler import SamplerSettings, make_sampler
    from cosjax.tensorboard import Writer

    assert jax.device_count() == 8 and jax.local_device_count() == 4
    settings = SamplerSettings(
        steps=4, shift=5.0, guide_scale=(5.0, 4.0), boundary=0.875, grid="diffsynth", solver="euler"
    )
    params = jax.tree.map(np.asarray, experts())
    cond, _ = inputs()
    cond = jax.tree.map(np.asarray, cond)

    mesh = make_mesh(data=2, fsdp=4)
    sharded = {name: to_global(p, param_shardings(p, mesh)) for name, p in params.items()}
    replicated = NamedSharding(mesh, P())
    cond_global = to_global(cond, jax.tree.map(lambda _: replicated, cond))
    sampler = make_sampler(CONFIG, sharded, settings)
    with jax.set_mesh(mesh):
        result = jax.jit(lambda c: sampler(c, jax.random.key(3)))(cond_global)
    latents = multihost_utils.process_allgather(result.latents, tiled=True)

    writer = Writer(out / "logs")
    writer.scalar("latents_rms", float(np.sqrt(np.mean(latents**2))), 0)
    writer.close()

    if process_id == 0:
        local = jax.devices()[0] if jax.process_index() == 0 else jax.local_devices()[0]
        put = lambda tree: jax.device_put(tree, local)  # noqa: E731
        reference = make_sampler(CONFIG, put(params), settings)
        ref = np.asarray(jax.jit(lambda c: reference(c, jax.random.key(3)))(put(cond)).latents)
        rel = float(np.linalg.norm(latents - ref) / np.linalg.norm(ref))
        (out / "result.json").write_text(json.dumps({"rel": rel, "processes": jax.process_count()}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))

"""Meshes, parameter shardings and activation constraints (docs/design.md section 6).

Mesh axes: `data` (CFG pair, batch, ensemble seeds), `fsdp` (parameters, FSDP-style), `context`
(the token sequence; self-attention switches to heads-sharded with all-to-alls, Ulysses-style, via
GSPMD constraints), `tensor` (attention heads and FFN width). Model code calls `constrain(x, ...)`,
which is a no-op unless a mesh is set with `jax.set_mesh(mesh)`, so the same code runs unsharded.

    mesh = make_mesh(data=2, fsdp=4)
    params = shard_params(params, mesh)
    with jax.set_mesh(mesh):
        v = jax.jit(module.apply)({"params": params}, x, t, context)
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "context", "tensor")
log = logging.getLogger(__name__)


def make_mesh(
    data: int = 1, fsdp: int | None = None, context: int = 1, tensor: int = 1, devices=None
) -> Mesh:
    """A (data, fsdp, context, tensor) mesh over `devices` (default: all); fsdp takes what is left."""
    devices = list(jax.devices() if devices is None else devices)
    rest = data * context * tensor
    if fsdp is None:
        if len(devices) % rest:
            raise ValueError(
                f"{len(devices)} devices cannot be split into data={data} x context={context} x "
                f"tensor={tensor} x fsdp"
            )
        fsdp = len(devices) // rest
    if data * fsdp * context * tensor != len(devices):
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} x context={context} x tensor={tensor} needs "
            f"{data * fsdp * context * tensor} devices, {len(devices)} are available"
        )
    grid = np.array(devices, dtype=object).reshape(data, fsdp, context, tensor)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def parse_mesh(spec: str, device_count: int | None = None) -> dict[str, int]:
    """'data=2,fsdp=2,context=2' -> {"data": 2, "fsdp": 2, "context": 2, "tensor": 1} (unnamed axes 1).

    Raises a ValueError naming the valid axes and the device count when the spec is malformed, names
    an unknown or repeated axis, or its product is not `device_count` (default: all devices).
    """
    count = jax.device_count() if device_count is None else device_count
    usage = (
        f"--mesh takes AXIS=SIZE pairs separated by commas over the axes {', '.join(AXES)} (unnamed axes "
        f"are 1; their product must be the {count} devices present), e.g. data=2,fsdp={max(count // 2, 1)}, "
        "or 'auto'"
    )
    sizes = dict.fromkeys(AXES, 1)
    named = set()
    for item in (spec or "").split(","):
        name, sep, raw = item.strip().partition("=")
        if not sep or not raw.strip().isdigit() or int(raw) < 1:
            raise ValueError(f"mesh {spec!r}: {item.strip()!r} is not AXIS=SIZE with SIZE >= 1; {usage}")
        name = name.strip()
        if name not in sizes:
            raise ValueError(f"mesh {spec!r}: unknown axis {name!r}; {usage}")
        if name in named:
            raise ValueError(f"mesh {spec!r}: axis {name!r} is given twice; {usage}")
        named.add(name)
        sizes[name] = int(raw)
    total = int(np.prod(list(sizes.values())))
    if total != count:
        raise ValueError(
            f"mesh {spec!r} spans {total} devices but this machine has {count} device(s); {usage}"
        )
    return sizes


def format_mesh(sizes) -> str:
    """{"data": 2, "fsdp": 4, ...} (or a Mesh) -> 'data=2,fsdp=4,context=1,tensor=1'."""
    sizes = dict(sizes.shape) if isinstance(sizes, Mesh) else dict(sizes)
    return ",".join(f"{a}={sizes.get(a, 1)}" for a in AXES)


def replicated(tree, mesh: Mesh):
    """Every array of `tree` (identical on every process of `mesh`; host or device values) replicated
    on every device of `mesh`.

    Conditioning committed to one device (an encoder's output) would meet parameters committed to
    the mesh inside a `jit` ("incompatible devices"); placed here, it takes the mesh's devices. A
    mesh spanning processes takes only global arrays: those are built from the host values (typed
    PRNG keys travel as their key data).
    """
    sharding = NamedSharding(mesh, P())
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(one, tree)


def spread_spec(shape: tuple[int, ...], mesh: Mesh) -> P:
    """A leaf's largest dimension divisible by the whole mesh's size sharded over all its axes
    (replicated when none divides): plain FSDP for models without a layout of their own."""
    n = int(np.prod(list(mesh.shape.values())))
    for i in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if n > 1 and shape[i] % n == 0:
            return P(*([None] * i), tuple(mesh.axis_names))
    return P()


def spread(tree, mesh: Mesh):
    """`tree` placed with `spread_spec` per leaf (the text encoder when it is too big to replicate)."""
    return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, spread_spec(a.shape, mesh))), tree)


def axis_size(name: str) -> int:
    """Size of mesh axis `name` in the active mesh (1 without a mesh or without that axis)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or name not in mesh.axis_names:
        return 1
    return dict(mesh.shape)[name]


_BATCH_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar("cosjax_batch_axis", default="data")


@contextlib.contextmanager
def batch_axis(name: str | None):
    """Within this block, model code's "data" constraints use mesh axis `name` instead (None: no
    constraint). `ensemble` uses it to give the `data` axis to its vmapped seeds."""
    token = _BATCH_AXIS.set(name)
    try:
        yield
    finally:
        _BATCH_AXIS.reset(token)


def constrain(x: jax.Array, *spec) -> jax.Array:
    """`with_sharding_constraint(x, P(*spec))` under an active mesh; axes it lacks are dropped."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    batch = _BATCH_AXIS.get()

    def keep(entry):
        if entry is None:
            return None
        names = (entry,) if isinstance(entry, str) else tuple(entry)
        names = tuple(batch if n == "data" else n for n in names)
        names = tuple(n for n in names if n is not None and n in mesh.axis_names)
        return names if len(names) > 1 else (names[0] if names else None)

    return jax.lax.with_sharding_constraint(x, P(*(keep(e) for e in spec)))


# Which axis of a kernel goes where. Stacked leaves carry a leading layer axis (never sharded).
_OUT_SHARDED = {"q", "k", "v", "fc1"}  # [in, out]: out over tensor (heads / FFN width), in over fsdp
_IN_SHARDED = {"o", "fc2"}  # [in, out]: in over tensor, out over fsdp


def param_spec(path: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh) -> P:
    """The PartitionSpec of one DiT parameter leaf; axes that do not divide evenly stay replicated."""
    sizes = dict(mesh.shape)
    stacked = path[0] == "blocks"
    body = shape[1:] if stacked else shape
    spec: list = [None] * len(body)
    module = path[-2] if len(path) >= 2 else ""
    if len(body) == 2 and path[-1] == "kernel":
        if module in _OUT_SHARDED:
            spec = ["fsdp", "tensor"]
        elif module in _IN_SHARDED:
            spec = ["tensor", "fsdp"]
        else:  # embeddings and head: shard the larger dimension over fsdp
            spec = ["fsdp", None] if body[0] >= body[1] else [None, "fsdp"]
    elif len(body) == 1 and path[-1] == "bias" and module in _OUT_SHARDED:
        spec = ["tensor"]
    spec = [a if a is not None and body[i] % sizes.get(a, 1) == 0 else None for i, a in enumerate(spec)]
    return P(*([None] if stacked else []), *spec)


def param_shardings(params, mesh: Mesh):
    """NamedShardings for a DiT parameter tree (arrays or ShapeDtypeStructs)."""

    def one(path, leaf):
        names = tuple(getattr(k, "key", str(k)) for k in path)
        return NamedSharding(mesh, param_spec(names, tuple(leaf.shape), mesh))

    return jax.tree_util.tree_map_with_path(one, params)


def shard_params(params, mesh: Mesh):
    """Places a DiT parameter tree on `mesh` with `param_shardings`."""
    return jax.device_put(params, param_shardings(params, mesh))


def initialize_distributed() -> bool:
    """`jax.distributed.initialize()` when running multi-host; a no-op for single-process runs.

    Multi-host means COSJAX_DISTRIBUTED=1 (set by `tpu/run.sh`) or JAX_COORDINATOR_ADDRESS in the
    environment. On Cloud TPU JAX detects everything itself. Elsewhere (N local processes for tests,
    or hosts without a cluster manager) set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=N
    and JAX_PROCESS_ID=0..N-1 in each process; JAX reads only the address by itself, so the other
    two are passed here. Returns whether it initialised.

    Raises:
      ValueError: JAX_NUM_PROCESSES / JAX_PROCESS_ID malformed, only one of them set, or set
        without JAX_COORDINATOR_ADDRESS.
    """
    wanted = os.environ.get("COSJAX_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in os.environ
    if not wanted:
        return False
    jax.distributed.initialize(**_process_settings(os.environ))
    log.info(
        "process %d of %d, %d local devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
    )
    return True


def _process_settings(env) -> dict:
    """JAX_NUM_PROCESSES / JAX_PROCESS_ID -> `jax.distributed.initialize` keywords (checked)."""
    names = ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    given = {n: env[n] for n in names if env.get(n, "") != ""}
    if not given:
        return {}
    fix = "set both JAX_NUM_PROCESSES=N and JAX_PROCESS_ID=0..N-1 (and JAX_COORDINATOR_ADDRESS=host:port)"
    if len(given) == 1:
        raise ValueError(f"only {next(iter(given))} is set; {fix}")
    if not env.get("JAX_COORDINATOR_ADDRESS"):
        raise ValueError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID need JAX_COORDINATOR_ADDRESS; {fix}")
    try:
        count, index = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
    except ValueError:
        raise ValueError(f"JAX_NUM_PROCESSES={given['JAX_NUM_PROCESSES']!r}, JAX_PROCESS_ID="
                         f"{given['JAX_PROCESS_ID']!r} are not integers; {fix}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"JAX_PROCESS_ID={index} is not in 0..JAX_NUM_PROCESSES-1={count - 1}; {fix}")
    return {"num_processes": count, "process_id": index}


def is_main_process() -> bool:
    """True on process 0: the only one that writes logs and summaries."""
    return jax.process_index() == 0

"""The DiT fast path computes the same function as the plain path.

Tolerances (float32, relative Frobenius error):
  * cached text K/V vs plain forward: <= 1e-6. The cache computes the same matmuls batched over
    layers (vmap) instead of one per scanned layer, so only summation order differs (measured
    ~1.5e-7); in bfloat16 the two agree to <= 1e-3 (measured 0: same bf16 ops).
  * sampled latents, cached vs uncached, 4 steps with CFG and two experts: <= 1e-5 (the per-call
    difference above, carried through the solver; measured ~1e-7).
  * broadcast vs per-token modulation, fused vs separate QKV, chunked vs plain attention: <= 1e-6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cosjax as cj
from cosjax.interventions.capture import EnergyLayers
from cosjax.models.attention import chunked_attention, xla_attention
from cosjax.models.dit import TextKV

TEXT_DIM = 40  # distinct from every other width, so the text-embedding matmul is recognisable


def _config(model_type="t2v", layers=3):
    in_dim = {"t2v": 16, "i2v": 36, "ti2v": 48}[model_type]
    out_dim = 48 if model_type == "ti2v" else 16
    return cj.DiTConfig(
        dim=64,
        ffn_dim=128,
        num_heads=2,
        num_layers=layers,
        in_dim=in_dim,
        out_dim=out_dim,
        model_type=model_type,
        text_dim=TEXT_DIM,
        freq_dim=32,
    )


def _inputs(cfg, batch=2, grid=(2, 4, 6), seed=1):
    ks = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(ks[0], (batch, cfg.out_dim, *grid))
    y = (
        jax.random.normal(ks[1], (batch, cfg.in_dim - cfg.out_dim, *grid))
        if cfg.model_type == "i2v"
        else None
    )
    context = jax.random.normal(ks[2], (batch, 7, cfg.text_dim))
    t = jnp.linspace(900.0, 100.0, batch)
    if cfg.model_type == "ti2v":  # latent frame 0 clean, as the sampler passes it
        tokens = int(np.prod(grid)) // 4
        t = jnp.where(jnp.arange(tokens)[None] < tokens // grid[0], 0.0, t[:, None])
    return x, t, context, y


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("model_type", ["t2v", "i2v", "ti2v"])
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-3)])
def test_cached_text_kv_forward_matches_plain(model_type, dtype, tol):
    cfg = _config(model_type)
    params = cj.init_params(cfg, jax.random.key(0))
    x, t, context, y = _inputs(cfg)
    module = cj.WanDiT(cfg, dtype=dtype)
    plain = jax.jit(lambda p: module.apply({"params": p}, x, t, context, y))(params)
    kv = jax.jit(module.encode_text)(params, context)
    want = (cfg.num_layers, 2, cfg.text_len, cfg.num_heads, cfg.head_dim)
    assert isinstance(kv, TextKV) and kv.k.shape == kv.v.shape == want and kv.k.dtype == dtype
    cached = jax.jit(lambda p, kv: module.apply({"params": p}, x, t, None, y, text_kv=kv))(params, kv)
    err = _rel(cached, plain)
    print(f"{model_type} {jnp.dtype(dtype).name}: cached vs plain relative error {err:.2e}")
    assert err <= tol


def test_cached_forward_keeps_the_plan_seam():
    cfg = _config()
    params = cj.init_params(cfg, jax.random.key(0))
    x, t, context, y = _inputs(cfg)
    module = cj.WanDiT(cfg)
    plan = EnergyLayers()  # the per-layer token-energy view of `capture`
    v0, (ys0, _) = jax.jit(lambda p: module.apply({"params": p}, x, t, context, y, plan=plan))(params)
    kv = jax.jit(module.encode_text)(params, context)
    run = jax.jit(lambda p, kv: module.apply({"params": p}, x, t, None, y, plan=plan, text_kv=kv))
    v1, (ys1, _) = run(params, kv)
    assert _rel(v1, v0) <= 1e-6 and _rel(ys1["energy"], ys0["energy"]) <= 1e-6


def test_text_kv_input_is_checked():
    cfg = _config()
    params = cj.init_params(cfg, jax.random.key(0))
    x, t, context, y = _inputs(cfg)
    module = cj.WanDiT(cfg)
    kv = module.encode_text(params, context)
    with pytest.raises(ValueError, match="not both"):
        module.apply({"params": params}, x, t, context, y, text_kv=kv)
    with pytest.raises(ValueError, match="text_kv"):
        module.apply({"params": params}, x[:1], t[:1], None, y, text_kv=kv)


def _walk(jaxpr, depth=0):
    """(primitive, scan depth, eqn) for every equation of a jaxpr and the jaxprs nested in it."""
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name, depth, eqn
        inner = depth + (eqn.primitive.name == "scan")
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from _walk(sub, inner)


def _text_matmul_depths(closed) -> list[int]:
    """Scan depths of the dot_generals that read the text encoder width (the text embedding)."""
    return [
        depth
        for name, depth, eqn in _walk(closed.jaxpr)
        if name == "dot_general" and eqn.invars[0].aval.shape[-1] == TEXT_DIM
    ]


def _mixture_run(cache: bool, solver="unipc"):
    cfg = _config("i2v", layers=2)
    experts = {
        "high_noise": cj.init_params(cfg, jax.random.key(0)),
        "low_noise": cj.init_params(cfg, jax.random.key(1)),
    }
    settings = cj.SamplerSettings(steps=4, shift=5.0, guide_scale=(3.0, 4.0), boundary=0.8, solver=solver)
    sampler = cj.make_sampler(cfg, experts, settings, cache_text_kv=cache)
    ks = jax.random.split(jax.random.key(2), 3)
    shape = (1, 16, 2, 4, 6)
    cond = cj.Conditioning(
        context=jax.random.normal(ks[0], (1, 9, TEXT_DIM)),
        negative=jax.random.normal(ks[1], (1, 5, TEXT_DIM)),
        y=jax.random.normal(ks[2], (1, 20, 2, 4, 6)),
        latent_shape=shape,
    )
    return sampler, cond


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_sampler_with_text_cache_equals_uncached(solver):
    (cached, cond), (plain, _) = _mixture_run(True, solver), _mixture_run(False, solver)
    assert len(cached.segments) == 2  # both experts run, each with its own cache
    key = jax.random.key(3)
    a = jax.jit(cj.trace_x0(cached))(cond, key)
    b = jax.jit(cj.trace_x0(plain))(cond, key)
    err, err_x0 = _rel(a.latents, b.latents), _rel(a.trace.x0, b.trace.x0)
    print(f"{solver}: sampled latents cached vs uncached relative error {err:.2e} (x0 trace {err_x0:.2e})")
    assert err <= 1e-5 and err_x0 <= 1e-5


def test_sampler_embeds_the_text_once_per_expert():
    (cached, cond), (plain, _) = _mixture_run(True), _mixture_run(False)
    key = jax.random.key(3)
    depths_cached = _text_matmul_depths(jax.make_jaxpr(cached)(cond, key))
    depths_plain = _text_matmul_depths(jax.make_jaxpr(plain)(cond, key))
    assert depths_cached == [0, 0]  # one text embedding per expert, outside the step scans
    assert depths_plain and min(depths_plain) >= 1  # the plain path embeds inside every step


def _has_shape(closed, shape) -> bool:
    return any(
        tuple(getattr(v.aval, "shape", ())) == shape for _, _, eqn in _walk(closed.jaxpr) for v in eqn.outvars
    )


def test_scalar_timestep_broadcasts_modulation():
    """T2V/I2V: t [B] gives the per-token path's result without any [B, L, 6, D] tensor."""
    cfg = _config("t2v")
    params = cj.init_params(cfg, jax.random.key(0))
    x, t, context, y = _inputs(cfg)
    tokens = int(np.prod(x.shape[2:])) // cfg.patch_volume
    t_tokens = jnp.broadcast_to(t[:, None], (t.shape[0], tokens))
    module = cj.WanDiT(cfg)
    fwd = lambda tt: module.apply({"params": params}, x, tt, context, y)  # noqa: E731
    assert _rel(jax.jit(fwd)(t), jax.jit(fwd)(t_tokens)) <= 1e-6
    per_token_modulation = (x.shape[0], tokens, 6, cfg.dim)
    assert not _has_shape(jax.make_jaxpr(fwd)(t), per_token_modulation)
    assert _has_shape(jax.make_jaxpr(fwd)(t_tokens), per_token_modulation)  # kept for TI2V


@pytest.mark.parametrize("model_type", ["t2v", "ti2v"])
def test_fused_qkv_matches_separate(model_type):
    cfg = _config(model_type)
    params = cj.init_params(cfg, jax.random.key(0))
    x, t, context, y = _inputs(cfg)
    run = lambda m: jax.jit(lambda p: m.apply({"params": p}, x, t, context, y))(params)  # noqa: E731
    plain, fused = run(cj.WanDiT(cfg)), run(cj.WanDiT(cfg, fuse_qkv=True))
    assert _rel(fused, plain) <= 1e-6
    # same parameter tree: a fused model initialises exactly the unfused one's parameters
    fused_init = jax.eval_shape(cj.WanDiT(cfg, fuse_qkv=True).init, jax.random.key(0), x, t, context, y)[
        "params"
    ]
    assert jax.tree.structure(fused_init) == jax.tree.structure(params)


def test_chunked_attention_matches_plain():
    ks = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(ks[0], (2, 1000, 3, 16))
    k, v = (jax.random.normal(s, (2, 700, 3, 16)) for s in ks[1:])
    kv_len = jnp.array([700, 650])
    want = jax.jit(xla_attention)(q, k, v, kv_len)
    got = jax.jit(chunked_attention, static_argnames="block")(q, k, v, kv_len, block=128)  # 8 blocks
    assert got.shape == want.shape and _rel(got, want) <= 1e-6
    params = cj.init_params(_config(), jax.random.key(0))
    x, t, context, y = _inputs(_config())
    run = lambda m: jax.jit(lambda p: m.apply({"params": p}, x, t, context, y))(params)  # noqa: E731
    assert _rel(run(cj.WanDiT(_config(), attention_backend="chunked")), run(cj.WanDiT(_config()))) <= 1e-6


def test_splash_block_override(monkeypatch):
    from cosjax.models import attention as A

    assert A.splash_blocks(300, 700) == (512, 512, 512)  # default: one 512 block (capped)
    monkeypatch.setenv("COSJAX_SPLASH_BLOCKS", "256,512,256")
    assert A.splash_blocks(300, 700) == (256, 512, 256)
    ks = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(ks[0], (1, 300, 2, 128))
    k, v = (jax.random.normal(s, (1, 700, 2, 128)) for s in ks[1:])
    kv_len = jnp.array([650])
    got = A.splash_attention(q, k, v, kv_len, interpret=True)
    assert _rel(got, xla_attention(q, k, v, kv_len)) <= 1e-5  # online softmax: summation order only
    monkeypatch.setenv("COSJAX_SPLASH_BLOCKS", "256,512,384")
    with pytest.raises(ValueError, match="multiples of 128"):
        A.splash_blocks(300, 700)

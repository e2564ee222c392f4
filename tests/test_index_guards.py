"""Silent wrong results in the API are refused or flagged (issue 13 items 5 and 6, API rows).

Traced indices cannot be range-checked in Python: an out-of-range one (negative included) must not
wrap or act, and the result carries the flag `check_indices` raises on. Swap sources are checked
exactly, a context of the wrong width is refused, `condition(frames=0)` and an image given to a T2V
model are refused. Tiny random models, float32 on CPU; "unchanged" is exact (the same program runs
the same arithmetic when the intervention does nothing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cosjax as cj
from cosjax import transforms as T
from cosjax.pipeline import Pipeline, match_model
from cosjax.sampling.sampler import Conditioning, SamplerSettings, make_sampler
from cosjax.weights.loading import LoadedDiT

STEPS = 2
SHAPE = (1, 16, 2, 4, 4)  # 2 latent frames, 2 x 2 patches -> 8 tokens
KEY = jax.random.key(5)


@pytest.fixture(scope="module")
def t2v():
    cfg = cj.get_preset("tiny").dit
    params = cj.init_params(cfg, jax.random.key(0))
    settings = SamplerSettings(STEPS, 5.0, (4.0, 4.0), grid="diffsynth", solver="euler")
    sampler = make_sampler(cfg, {"dit": params}, settings)
    k1, k2 = jax.random.split(jax.random.key(1))
    cond = Conditioning(
        context=jax.random.normal(k1, (1, 4, cfg.text_dim)),
        negative=jax.random.normal(k2, (1, 3, cfg.text_dim)),
        latent_shape=SHAPE,
    )
    return sampler, cond, params


def test_traced_step_out_of_range_is_flagged_and_does_nothing(t2v):
    sampler, cond, _ = t2v
    by_step = jax.jit(lambda c, k, s: T.noise_at_step(sampler, s)(c, k))
    plain = jax.jit(sampler)(cond, KEY)
    inside = by_step(cond, KEY, jnp.int32(STEPS - 1))
    assert int(inside.index_error) == 0 and T.check_indices(inside) is inside
    for bad in (-1, STEPS):
        out = by_step(cond, KEY, jnp.int32(bad))
        assert int(out.index_error) == T.INDEX_FLAGS["step"]
        np.testing.assert_array_equal(out.latents, plain.latents)  # -1 did not wrap to the last step
        with pytest.raises(IndexError, match="a traced step index given to a transform was out of range"):
            T.check_indices(out)
    assert by_step._cache_size() == 1  # the check costs no recompilation
    assert not np.array_equal(inside.latents, plain.latents)  # an in-range step does act


def test_traced_frame_and_layer_out_of_range_are_flagged(t2v):
    sampler, cond, _ = t2v
    plain = jax.jit(sampler)(cond, KEY)
    by_frame = jax.jit(lambda c, k, f: T.noise_at_frame(sampler, f)(c, k))
    out = by_frame(cond, KEY, jnp.int32(-1))
    assert int(out.index_error) == T.INDEX_FLAGS["latent frame"]
    np.testing.assert_array_equal(out.latents, plain.latents)
    assert int(by_frame(cond, KEY, jnp.int32(1)).index_error) == 0

    source = jax.jit(T.capture(sampler, [0], [0], what="hidden"))(cond, KEY).trace.hidden[:, 0] + 1.0
    by_layer = jax.jit(lambda c, k, layer: T.swap_layer(sampler, layer, 0, source)(c, k))
    out = by_layer(cond, KEY, jnp.int32(-1))
    assert int(out.index_error) == T.INDEX_FLAGS["layer"]
    np.testing.assert_array_equal(out.latents, plain.latents)  # -1 did not swap the last layer
    with pytest.raises(IndexError, match="traced layer index"):
        T.check_indices(out)
    assert int(by_layer(cond, KEY, jnp.int32(1)).index_error) == 0


def test_swap_source_shape_is_checked_exactly(t2v):
    sampler, cond, _ = t2v
    dim = sampler.config.dim
    good = jnp.zeros((1, 2, 8, dim))  # [swap steps, 2B with CFG, tokens, dim]
    jax.jit(T.swap_layer(sampler, 0, 0, good)).lower(cond, KEY)  # traces without error
    for bad in ((1, 1, 8, dim), (1, 2, 1, dim), (1, 2, 9, dim), (1, 2, 8, dim + 2)):
        with pytest.raises(ValueError) as err:
            T.swap_layer(sampler, 0, 0, jnp.zeros(bad))(cond, KEY)
        assert str(err.value) == (
            f"swap source has shape {bad}, but this run needs (1, 2, 8, {dim}) = (swap steps, 2B with "
            "CFG, tokens, dim): capture it with capture(..., what='hidden') from a run of the same batch, "
            "video size and CFG"
        )


def test_context_of_the_wrong_width_with_cfg_is_refused(t2v):
    sampler, cond, _ = t2v
    width = sampler.config.text_dim
    with pytest.raises(ValueError) as err:
        sampler(cond.replace(negative=jnp.zeros((1, 3, width + 1))), KEY)
    assert str(err.value) == (
        f"negative must be [B, L_txt, {width}] with B = 1 (the model's text_dim), got (1, 3, {width + 1}): "
        "embed it with this model's text encoder"
    )
    with pytest.raises(ValueError, match=rf"context must be \[B, L_txt, {width}\]"):
        sampler(cond.replace(context=jnp.zeros((1, 4, 2 * width))), KEY)


def test_condition_refuses_zero_frames_and_an_image_on_t2v(t2v):
    sampler, _, params = t2v
    dit = LoadedDiT(sampler.config, {"dit": params}, None, jnp.float32)
    pipe = Pipeline(dit, match_model(dit.config), SamplerSettings(2, 5.0, (4.0, 4.0)))
    embeds = jnp.zeros((1, 4, dit.config.text_dim))
    kw = dict(prompt_embeds=embeds, negative_embeds=embeds, height=32, width=32)
    assert pipe.condition(frames=5, **kw).latent_shape[2] == 2
    with pytest.raises(ValueError, match=r"frame count 0 is not of the form 4k \+ 1"):
        pipe.condition(frames=0, **kw)
    with pytest.raises(ValueError) as err:
        pipe.condition(image=np.zeros((32, 32, 3), np.uint8), frames=5, **kw)
    assert str(err.value) == (
        "this is a text-to-video model (tiny): it takes no image; drop image=, or load an I2V or TI2V "
        "checkpoint"
    )

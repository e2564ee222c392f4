"""SamplerSettings and the sampler's segments: named guidance scales and named expert segments."""

from __future__ import annotations

import jax
import pytest

import cosjax as cj


def test_guide_scale_and_segments_are_named():
    """guide_scale is a (low_noise, high_noise) GuideScale whatever form it is given in, still equal
    to the plain pair; the sampler's segments name their expert, steps and scale."""
    from cosjax.configs import GuideScale

    assert cj.SamplerSettings(steps=4, shift=1.0, guide_scale=5).guide_scale == GuideScale(5.0, 5.0)
    pair = cj.SamplerSettings(steps=4, shift=1.0, guide_scale=[3.0, 4.0]).guide_scale
    assert (pair.low_noise, pair.high_noise) == (3.0, 4.0) and pair == (3.0, 4.0)
    with pytest.raises(ValueError, match="low_noise, high_noise"):
        cj.SamplerSettings(steps=4, shift=1.0, guide_scale=(1.0, 2.0, 3.0))
    config = cj.get_preset("tiny-i2v").dit
    params = cj.init_params(config, jax.random.key(0))
    settings = cj.SamplerSettings(steps=6, shift=5.0, guide_scale=(3.0, 4.0), boundary=0.9, grid="diffusers")
    sampler = cj.make_sampler(config, {"high_noise": params, "low_noise": params}, settings)
    high, low = sampler.segments
    assert (high.expert, high.start, high.guide_scale) == ("high_noise", 0, 4.0)
    assert (low.expert, low.end, low.guide_scale) == ("low_noise", 6, 3.0) and high.end == low.start > 0

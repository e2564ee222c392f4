"""First-frame preprocessing per preset against each reference's own code path.

Tolerance: one uint8 level (2/255 in [-1, 1]) on the frames, identical sizes. The PIL rules call
PIL itself and must be exact; the torch-bicubic rule differs from `F.interpolate` by float32
summation order only (~1e-6).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fakes import PoolVAE
from PIL import Image

from cosjax import preprocess
from cosjax.pipeline import Pipeline

LEVEL = 2.0 / 255.0  # one uint8 level in [-1, 1]
# (image h, w) -> (video h, w): shrink, enlarge, both, several aspect ratios
RESIZES = [((60, 100), (48, 80)), ((30, 20), (64, 48)), ((90, 50), (48, 96)), ((37, 111), (32, 112))]


def _image(h, w, seed=0):
    """Random uint8 RGB with hard edges (blocks) and noise, where resampling filters differ most."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (h // 5 + 1, w // 5 + 1, 3)).repeat(5, 0).repeat(5, 1)[:h, :w]
    return np.clip(blocks + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("src", "dst"), RESIZES)
def test_official_i2v_equals_torch_bicubic(src, dst):
    torch = pytest.importorskip("torch")
    img = _image(*src)
    # the official path: TF.to_tensor(img).sub_(0.5).div_(0.5), then F.interpolate(mode="bicubic")
    ref = (torch.from_numpy(img).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
    ref = torch.nn.functional.interpolate(ref[None], size=dst, mode="bicubic")[0].numpy()
    ours = preprocess.first_frame(img, *dst, "official", "i2v")
    assert ours.shape == ref.shape == (3, *dst)
    assert np.abs(ours - ref).max() <= 1e-5 < LEVEL
    # the old rule (antialiased Keys a = -0.5) is measurably different: the test can fail
    old = np.asarray(jnp.asarray(preprocess.to_signed(img)))
    import jax

    old = np.asarray(jax.image.resize(old, (3, *dst), "bicubic"))
    assert np.abs(old - ref).max() > LEVEL


def _pil_cover_crop(img, h, w):
    """The official TI2V steps, written from `wan/textimage2video.py` with PIL."""
    pil = Image.fromarray(img)
    scale = max(w / pil.width, h / pil.height)
    pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.LANCZOS)
    x1, y1 = (pil.width - w) // 2, (pil.height - h) // 2
    return np.asarray(pil.crop((x1, y1, x1 + w, y1 + h)))


@pytest.mark.parametrize(("src", "dst"), RESIZES)
def test_official_ti2v_cover_and_crop_equals_pil(src, dst):
    img = _image(*src, seed=1)
    ref = np.asarray(_pil_cover_crop(img, *dst), np.float32).transpose(2, 0, 1) / 127.5 - 1
    ours = preprocess.first_frame(img, *dst, "official", "ti2v")
    assert ours.shape == ref.shape == (3, *dst)
    assert np.abs(ours - ref).max() <= 1e-6


@pytest.mark.parametrize("src", [(600, 1000), (500, 700), (517, 333), (37, 111), (48, 64)])
def test_vbvr_rounds_sizes_up_and_resizes_with_pil_bicubic(src):
    img = _image(*src, seed=2)
    h, w = preprocess.video_size(src, "vbvr", "i2v", (8, 8), (2, 2), (48, 64))
    assert (h, w) == tuple(-(-s // 16) * 16 for s in src)  # DiffSynth's check_resize_height_width
    # DiffSynth: input_image.resize((width, height)) (PIL's default filter, BICUBIC), then u8 * 2/255 - 1
    ref = np.asarray(Image.fromarray(img).resize((w, h)), np.float32).transpose(2, 0, 1) * (2 / 255) - 1
    ours = preprocess.first_frame(img, h, w, "vbvr", "i2v")
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-6
    assert preprocess.video_size(src, "vbvr", "ti2v", (16, 16), (2, 2), (48, 64)) == tuple(
        -(-s // 32) * 32 for s in src
    )


def test_official_sizes_from_max_area():
    # I2V (wan/image2video.py): latent sides sqrt(area * aspect) // 8 // 2 * 2
    assert preprocess.video_size(
        (720, 1280), "official", "i2v", (8, 8), (2, 2), (0, 0), max_area=720 * 1280
    ) == (
        720,
        1280,
    )
    assert preprocess.official_i2v_size(1024, 1024, 480 * 832, 8, 2) == (624, 624)
    assert preprocess.official_i2v_size(600, 1000, 480 * 832, 8, 2) == (480, 800)
    # TI2V (wan/utils/utils.py best_output_size, multiples of 32)
    assert preprocess.best_output_size(704, 1280, 32, 704 * 1280) == (704, 1280)
    assert preprocess.best_output_size(1000, 2000, 32, 704 * 1280) == (672, 1312)
    # explicit height/width win over max_area
    assert preprocess.video_size((600, 1000), "official", "i2v", (8, 8), (2, 2), (0, 0), 64, 96, 10**6) == (
        64,
        96,
    )
    with pytest.raises(ValueError, match="give both height and width or neither"):
        preprocess.video_size((600, 1000), "official", "i2v", (8, 8), (2, 2), (0, 0), height=64)
    with pytest.raises(ValueError, match="max_area 10 is too small"):
        preprocess.official_i2v_size(600, 1000, 10, 8, 2)


def test_pipeline_conditions_by_preset(tmp_path):
    """Pipeline.condition: vbvr takes a 70x50 image to 80x64 (PIL bicubic), official sizes it from
    max_area and resizes with torch's bicubic."""
    from helpers.torch_refs import make_reference, save_official

    import cosjax as cj

    save_official(
        make_reference(in_channels=36, out_channels=16, seed=1), tmp_path / "src" / "high_noise_model"
    )
    save_official(
        make_reference(in_channels=36, out_channels=16, seed=2), tmp_path / "src" / "low_noise_model"
    )
    ckpt = cj.convert_checkpoint(tmp_path / "src", tmp_path / "ckpt", dtype="float32", progress=False)
    vbvr = Pipeline.from_pretrained(ckpt, preset="vbvr")
    assert vbvr.preset == "vbvr"
    vbvr.vae = PoolVAE()
    img = _image(50, 70, seed=3)
    ctx = jnp.ones((1, 4, 32))
    cond = vbvr.condition(image=img, prompt_embeds=ctx, cfg=False, frames=5)
    assert cond.latent_shape == (1, 16, 2, 8, 10)
    want = np.asarray(Image.fromarray(img).resize((80, 64)), np.float32).transpose(2, 0, 1) / 127.5 - 1
    first = PoolVAE().encode(jnp.asarray(want)[None, :, None])
    np.testing.assert_allclose(np.asarray(cond.y[:, 4:, :1]), np.asarray(first), atol=1e-6)

    official = Pipeline(vbvr.dit, vbvr.model, vbvr.settings, vae=PoolVAE(), preset="official")
    cond = official.condition(image=img, prompt_embeds=ctx, cfg=False, frames=5, max_area=48 * 64)
    h, w = preprocess.official_i2v_size(50, 70, 48 * 64, 8, 2)
    assert cond.latent_shape == (1, 16, 2, h // 8, w // 8)
    with pytest.raises(ValueError, match="size 50x70 cannot be tiled"):
        official.condition(image=img, prompt_embeds=ctx, cfg=False, frames=5)

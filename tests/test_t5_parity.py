"""umT5 encoder parity with transformers, both checkpoint layouts, and clear loader errors.

The reference is a tiny random transformers `UMT5EncoderModel` (3 layers, non-zero weights
everywhere) saved with `save_pretrained` (whole and sharded) and rewritten in the official Wan
`.pth` layout (key names from `wan22.md` section 7, renamed by a table written here, independently of
cosjax's key map). The batch has rows of true length 5, 9 and 12 padded to 12.

Tolerance: float32 relative error <= 1e-5 on the real (non-padded) positions. Both sides run the
same float32 operations, only in a different order (XLA vs. torch kernels), so each differs by a
few float32 ulps; three layers of unscaled attention with O(10) logits amplify that to about 1e-6.
1e-5 leaves headroom for other BLAS builds, while any real mistake (a 1/sqrt(d) scale, swapped
FFN branches, a wrong bucket or mask) gives errors of order 1e-2 and above. Padded positions are
not compared: their values are discarded by Wan (and transformers computes them differently).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.layouts import official_t5_state
from helpers.numerics import relative_error
from helpers.torch_refs import randomize_umt5, torch
from safetensors.torch import load_file, save_file

from cosjax.models import t5
from cosjax.weights.components import t5_config_from_json
from cosjax.weights.read import load_t5
from cosjax.weights.t5_keys import check_keys
from cosjax.weights.tensors import CheckpointError

TINY = dict(vocab_size=64, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=3)
TINY_CONFIG = t5.T5Config(**TINY)
LENGTHS = (5, 9, 12)
SEQ = 12
TOL = 1e-5


def hf_config(**overrides):
    from transformers import UMT5Config

    kwargs = dict(
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        layer_norm_epsilon=1e-6,
    )
    return UMT5Config(**{**kwargs, **overrides})


@pytest.fixture(scope="module")
def reference():
    """Tiny UMT5EncoderModel, float32, random non-zero weights (RMSNorm weights around 1)."""
    from transformers import UMT5EncoderModel

    return randomize_umt5(UMT5EncoderModel(hf_config(**TINY)).eval(), seed=0)


@pytest.fixture(scope="module")
def batch():
    """ids int32 [3, 12] (random tokens, EOS = 1 last, pad 0) and mask int32 [3, 12]."""
    rng = np.random.default_rng(0)
    ids = np.zeros((len(LENGTHS), SEQ), np.int32)
    mask = np.zeros((len(LENGTHS), SEQ), np.int32)
    for row, n in enumerate(LENGTHS):
        ids[row, : n - 1] = rng.integers(2, TINY["vocab_size"], n - 1)
        ids[row, n - 1] = 1
        mask[row, :n] = 1
    return ids, mask


@pytest.fixture(scope="module")
def expected(reference, batch):
    """transformers' last hidden states, float32 [3, 12, 32]."""
    ids, mask = batch
    with torch.no_grad():
        out = reference(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
    return out.last_hidden_state.numpy()


@pytest.fixture(scope="module")
def hf_dir(reference, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "text_encoder"
    reference.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_loaded(hf_dir):
    return load_t5(hf_dir)


def _row_errors(ours: np.ndarray, ref: np.ndarray) -> list[float]:
    return [relative_error(ours[row, :n], ref[row, :n]) for row, n in enumerate(LENGTHS)]


def _assert_same_tree(a: dict, b: dict) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_buckets_match_transformers(reference):
    """Every relative distance a 512-token prompt (and more) produces lands in the same bucket."""
    rel = torch.arange(-1000, 1000)[None]
    attn = reference.encoder.block[0].layer[0].SelfAttention
    want = attn._relative_position_bucket(rel).numpy()[0]
    ours = t5.relative_buckets(2000, 2000, 32, 128)[1000]  # query 1000: rel = key - 1000
    np.testing.assert_array_equal(ours, want)


def test_hf_folder_parity(hf_loaded, batch, expected):
    config, params = hf_loaded
    assert config == TINY_CONFIG
    ids, mask = batch
    out = np.asarray(t5.encode(params, jnp.asarray(ids), jnp.asarray(mask), config))
    assert out.dtype == np.float32 and out.shape == (len(LENGTHS), SEQ, TINY["d_model"])
    errors = _row_errors(out, expected)
    print(f"\numT5 float32 relative error per row (lengths {LENGTHS}): {[f'{e:.2e}' for e in errors]}")
    assert max(errors) <= TOL
    # config=None reads the architecture from the parameter shapes
    np.testing.assert_array_equal(np.asarray(t5.encode(params, jnp.asarray(ids), jnp.asarray(mask))), out)


def test_padded_tokens_are_ignored(hf_loaded, batch):
    config, params = hf_loaded
    ids, mask = batch
    other = np.where(mask == 1, ids, 7).astype(np.int32)
    a = np.asarray(t5.encode(params, jnp.asarray(ids), jnp.asarray(mask), config))
    b = np.asarray(t5.encode(params, jnp.asarray(other), jnp.asarray(mask), config))
    for row, n in enumerate(LENGTHS):
        np.testing.assert_allclose(a[row, :n], b[row, :n], rtol=0, atol=1e-6)


def test_encode_padded_trims_and_zero_pads(hf_loaded, batch):
    config, params = hf_loaded
    ids, mask = batch
    out = np.asarray(t5.encode(params, jnp.asarray(ids), jnp.asarray(mask), config))
    padded = np.asarray(t5.encode_padded(params, jnp.asarray(ids), jnp.asarray(mask), config))
    assert padded.shape == (len(LENGTHS), t5.TEXT_LEN, TINY["d_model"]) and padded.dtype == np.float32
    for row, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(padded[row, :n], out[row, :n])
        assert not padded[row, n:].any()


def test_sharded_folder_and_repo_root(reference, hf_loaded, tmp_path):
    folder = tmp_path / "repo" / "text_encoder"
    reference.save_pretrained(folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    config, params = load_t5(tmp_path / "repo")  # a Diffusers repo root: text_encoder/ is found
    assert config == hf_loaded[0]
    _assert_same_tree(params, hf_loaded[1])


def test_official_pth_gives_the_same_output(reference, hf_loaded, batch, tmp_path):
    path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(official_t5_state(reference.state_dict()), path)
    config, params = load_t5(path, TINY_CONFIG)
    _assert_same_tree(params, hf_loaded[1])
    ids, mask = batch
    ours = t5.encode(params, jnp.asarray(ids), jnp.asarray(mask), config)
    theirs = t5.encode(hf_loaded[1], jnp.asarray(ids), jnp.asarray(mask), config)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_bfloat16_official_pth(reference, batch, tmp_path):
    """The official file is bf16: params stay bf16, the output is float32, and its rounding error is
    no larger than transformers' own bf16 run (both against float32 on the same bf16 weights)."""
    bf16 = copy.deepcopy(reference).bfloat16()
    path = tmp_path / "enc-bf16.pth"
    torch.save(official_t5_state(bf16.state_dict()), path)
    _, params = load_t5(path, TINY_CONFIG)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    ids, mask = batch
    out = np.asarray(t5.encode(params, jnp.asarray(ids), jnp.asarray(mask), TINY_CONFIG))
    assert out.dtype == np.float32 and np.isfinite(out).all()

    inputs = dict(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
    with torch.no_grad():
        theirs = bf16(**inputs).last_hidden_state.float().numpy()
        exact = copy.deepcopy(bf16).float()(**inputs).last_hidden_state.numpy()
    ours_err, theirs_err = _row_errors(out, exact), _row_errors(theirs, exact)
    print(
        f"\numT5 bf16 vs float32 on the same weights, relative error per row: ours "
        f"{[f'{e:.2e}' for e in ours_err]}, transformers bf16 {[f'{e:.2e}' for e in theirs_err]}"
    )
    assert max(ours_err) <= min(5e-2, 1.5 * max(theirs_err))
    # loading the bf16 file as float32 gives the same (bf16-representable) weights
    _, as_f32 = load_t5(path, TINY_CONFIG, dtype="float32")
    _assert_same_tree(jax.tree.map(lambda a: a.astype(jnp.float32), params), as_f32)


def _rewrite_hf(src: Path, dst: Path, edit) -> Path:
    """Copies a single-file transformers folder to `dst` with `edit` applied to its tensors."""
    dst.mkdir(parents=True)
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


BAD_EDITS = {
    "missing": lambda t: t.pop("encoder.block.1.layer.0.SelfAttention.k.weight"),
    "mis-shaped": lambda t: t.update(
        {"encoder.block.2.layer.1.DenseReluDense.wo.weight": torch.zeros(32, 40)}
    ),
    "unexpected": lambda t: t.update({"encoder.block.3.layer.0.layer_norm.weight": torch.ones(32)}),
}
BAD_KEYS = {  # kind -> (key, phrase the error must hold)
    "missing": ("encoder.block.1.layer.0.SelfAttention.k.weight", "missing"),
    "mis-shaped": (
        "encoder.block.2.layer.1.DenseReluDense.wo.weight",
        "has shape (32, 40), expected (32, 48)",
    ),
    "unexpected": ("encoder.block.3.layer.0.layer_norm.weight", "unexpected"),
}


@pytest.mark.parametrize("kind", list(BAD_EDITS))
def test_bad_hf_checkpoint_names_key_and_file(hf_dir, tmp_path, kind):
    bad = _rewrite_hf(hf_dir, tmp_path / "bad", BAD_EDITS[kind])
    with pytest.raises(CheckpointError) as err:
        load_t5(bad)
    message = str(err.value)
    print(f"\n{kind}: {message}")
    key, phrase = BAD_KEYS[kind]
    assert key in message and phrase in message and str(bad) in message


def test_bad_official_checkpoint_names_key_and_file(reference, tmp_path):
    state = official_t5_state(reference.state_dict())
    del state["blocks.0.ffn.gate.0.weight"]
    path = tmp_path / "enc.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.gate\.0\.weight") as err:
        load_t5(path, TINY_CONFIG)
    assert str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="missing.*vocab_size=256384"):  # the default is umT5-XXL
        load_t5(path)


def test_unsupported_configs_are_refused(hf_dir):
    raw = json.loads((hf_dir / "config.json").read_text())
    for change in ({"model_type": "t5"}, {"feed_forward_proj": "relu"}, {"is_decoder": True}):
        with pytest.raises(CheckpointError, match="config.json"):
            t5_config_from_json({**raw, **change}, hf_dir / "config.json")


def test_full_size_key_coverage_on_meta_device():
    """umt5-xxl's real state-dict keys and shapes (meta device, no weights) fit our tree in both layouts."""
    from transformers import UMT5EncoderModel

    real = hf_config(vocab_size=256384, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24)
    assert t5_config_from_json(real.to_dict(), "umt5-xxl config") == t5.UMT5_XXL
    with torch.device("meta"):
        model = UMT5EncoderModel(real)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    plan = check_keys(t5.UMT5_XXL, "diffusers", shapes)
    assert sum(len(keys) for _, keys in plan) == len(shapes) - 1  # the tied alias is accepted, not read
    official = official_t5_state(shapes)
    check_keys(t5.UMT5_XXL, "official", official)
    n_params = sum(int(np.prod(s)) for s in official.values())
    print(f"\numT5-XXL encoder: {len(official)} official tensors, {n_params / 1e9:.3f} B parameters")
    assert abs(n_params / 1e9 - 5.68) < 0.01

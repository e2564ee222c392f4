"""Merging DiffSynth LoRA files (VBVR-Wan2.2's release format) into the DiT experts while converting.

The reference is DiffSynth's own fuse (`GeneralLoRALoader.fuse_lora_to_base_model`, see the docstring of
`cosjax.weights.lora`), written out here in torch: target module = key without `lora_B.<adapter>.weight`,
W <- W + alpha * (B @ A), all in float32 (the loader's dtype when the pipeline is float32).

Tolerances:
  * merged leaves: |ours - reference| <= 2e-7 absolute, about 3 float32 ulps of the largest merged
    weights here (|W| < 0.9). Both sides do the same float32 operations; only the order of the rank-4
    sums in the matmul (numpy's BLAS against torch's) could differ. Measured: 0 (bit-identical).
  * forward pass: float32 relative error <= 1e-5 against Diffusers with the merged weights, the bound
    of `test_dit_parity.py`. Measured: 5.4e-7 (high noise), 5.6e-7 (low noise). The LoRAs move the
    output by 0.11 and 0.08 (relative), far above that bound.
"""

from __future__ import annotations

import copy
import functools
import json
import operator
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
from helpers.layouts import official_key
from helpers.numerics import relative_error
from helpers.torch_refs import make_reference, save_official, torch
from safetensors.torch import save_file

import cosjax as cj
from cosjax.cli import main as cli_main
from cosjax.weights.lora import merge_weight, read_lora, with_loras
from cosjax.weights.sources import open_checkpoint
from cosjax.weights.tensors import CheckpointError

RANK = 4
# VBVR: --lora_target_modules q,k,v,o,ffn.0,ffn.2, which PEFT matches in both attentions.
# module (official, without "blocks.{i}.") -> its kernel in our tree
TARGETS = {
    **{f"{attn}.{p}": ("blocks", attn, p, "kernel") for attn in ("self_attn", "cross_attn") for p in "qkvo"},
    "ffn.0": ("blocks", "fc1", "kernel"),
    "ffn.2": ("blocks", "fc2", "kernel"),
}


def official_state(model) -> dict[str, torch.Tensor]:
    return {official_key(k): v for k, v in model.state_dict().items()}


def diffsynth_lora(
    state, seed, dtype=torch.float32, layers=(0, 1), modules=TARGETS
) -> dict[str, torch.Tensor]:
    """A random rank-4 LoRA in the keys DiffSynth's trainer saves: `<module>.lora_{A,B}.default.weight`."""
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for i in layers:
        for module in modules:
            out_dim, in_dim = state[f"blocks.{i}.{module}.weight"].shape
            name = f"blocks.{i}.{module}"
            down, up = torch.randn(RANK, in_dim, generator=gen), torch.randn(out_dim, RANK, generator=gen)
            lora[f"{name}.lora_A.default.weight"] = (0.1 * down).to(dtype)
            lora[f"{name}.lora_B.default.weight"] = (0.1 * up).to(dtype)
    return lora


def diffsynth_fuse(state, lora, alpha=1.0) -> dict[str, torch.Tensor]:
    """DiffSynth's fuse, in torch float32: W + alpha * mm(B, A), with A scaled by a stored alpha / rank."""
    fused = dict(state)
    for key, up in lora.items():
        parts = key.split(".")
        role = "lora_B" if "lora_B" in parts else "lora_up" if "lora_up" in parts else None
        if role is None:
            continue
        down = lora[key.replace(role, {"lora_B": "lora_A", "lora_up": "lora_down"}[role])].float()
        cut = parts.index(role)
        module = ".".join(parts[:cut]).removeprefix("diffusion_model.")
        alpha_key = ".".join(parts[:cut] + ["alpha"])
        if alpha_key in lora:
            down = down * (lora[alpha_key].float() / down.shape[0])
        weight = module + ".weight"
        fused[weight] = fused[weight].float() + alpha * torch.mm(up.float(), down)
    return fused


def with_weights(model, state):
    """A copy of the Diffusers `model` with the official-named `state` loaded."""
    merged = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in merged.named_parameters():
            param.copy_(state[official_key(name)])
    return merged


def save(tensors: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """An official-layout I2V A14B pair (2 layers each), VBVR-style LoRAs for both, converted in float32.

    The high-noise LoRA is float32 at strength 1.0 (VBVR's setting); the low-noise one bfloat16 (as
    DiffSynth's bf16 training writes them) at strength 0.75.
    """
    root = tmp_path_factory.mktemp("lora")
    models = {
        "high_noise": make_reference(in_channels=36, seed=1),
        "low_noise": make_reference(in_channels=36, seed=2),
    }
    strengths = {"high_noise": 1.0, "low_noise": 0.75}
    fused, files = {}, {}
    for i, (name, model) in enumerate(models.items()):
        save_official(model, root / "src" / f"{name}_model")
        state = official_state(model)
        lora = diffsynth_lora(state, seed=10 + i, dtype=[torch.float32, torch.bfloat16][i])
        files[name] = save(lora, root / "loras" / f"{name}_lora.safetensors")
        fused[name] = diffsynth_fuse(state, lora, alpha=strengths[name])
    spec = {name: [(files[name], strengths[name])] for name in models}
    cj.convert_checkpoint(root / "src", root / "out", dtype="float32", progress=False, loras=spec)
    return SimpleNamespace(root=root, models=models, fused=fused, files=files, strengths=strengths)


def test_merged_leaves_match_diffsynth_fuse(pair):
    dit = cj.load_dit(pair.root / "out")
    worst = 0.0
    for name, model in pair.models.items():
        params, base = dit.experts[name], official_state(model)
        for module, path in TARGETS.items():
            leaf = np.asarray(functools.reduce(operator.getitem, path, params))
            for layer in range(model.config.num_layers):
                ref = pair.fused[name][f"blocks.{layer}.{module}.weight"].numpy().T
                worst = max(worst, float(np.abs(leaf[layer] - ref).max()))
                assert np.abs(leaf[layer] - base[f"blocks.{layer}.{module}.weight"].numpy().T).max() > 1e-3
        # weights no LoRA touches are copied bit for bit
        np.testing.assert_array_equal(
            params["time_projection"]["kernel"], base["time_projection.1.weight"].numpy().T
        )
        np.testing.assert_array_equal(
            params["blocks"]["self_attn"]["q"]["bias"][1], base["blocks.1.self_attn.q.bias"]
        )
    print(f"merged leaves: max |ours - DiffSynth fuse| = {worst:.1e}")
    assert worst <= 2e-7


def test_forward_matches_diffusers_with_merged_weights(pair):
    dit = cj.load_dit(pair.root / "out")
    assert dit.dtype == jnp.float32
    for name, model in pair.models.items():
        x, y, ctx, t = _inputs(model, seed=3)
        ref = _forward(with_weights(model, pair.fused[name]), x, y, ctx, t)
        ours = np.asarray(
            dit(*(jnp.asarray(a.numpy()) for a in (x, t, ctx[:, :7])), y=jnp.asarray(y.numpy()), expert=name)
        )
        err = relative_error(ours, ref)
        print(f"{name}: relative error vs merged Diffusers {err:.1e}")
        assert err <= 1e-5
        assert relative_error(ours, _forward(model, x, y, ctx, t)) > 1e-2  # the LoRA really changed it


def test_metadata_records_the_loras(pair):
    meta = json.loads((pair.root / "out" / "cosjax_dit.json").read_text())
    for name, path in pair.files.items():
        (entry,) = meta["loras"][name]
        assert entry == {"path": str(path.resolve()), "strength": pair.strengths[name], "weights": 20}


def _inputs(model, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 4, 6, generator=gen)
    y = torch.randn(1, 20, 2, 4, 6, generator=gen)
    ctx = torch.zeros(1, 512, model.config.text_dim)
    ctx[:, :7] = torch.randn(1, 7, model.config.text_dim, generator=gen)
    return x, y, ctx, torch.tensor([812.0])


def _forward(model, x, y, ctx, t):
    with torch.no_grad():
        return model(torch.cat([x, y], dim=1), t, ctx).sample.numpy()


# ----------------------------------------------------------------------------- refused LoRAs


def _refused(pair, tmp_path, lora: dict, match: str, expert="low_noise"):
    path = save(lora, tmp_path / "bad" / "lora.safetensors")
    dst = tmp_path / "out"
    with pytest.raises(CheckpointError, match=match) as info:
        cj.convert_checkpoint(pair.root / "src", dst, progress=False, loras={expert: [(path, 1.0)]})
    assert str(path) in str(info.value)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"], "output or temporary folder left behind"


def test_lora_for_a_bigger_model_is_refused(pair, tmp_path):
    big = make_reference(in_channels=36, attention_head_dim=32, ffn_dim=128, num_layers=1)
    lora = diffsynth_lora(official_state(big), seed=0, layers=[0])
    match = r"'blocks.0.\S+.lora_B.default.weight' / .* update of shape \(64, 64\), but .* \(48, 48\)"
    _refused(pair, tmp_path, lora, match)


def test_lora_for_a_missing_layer_is_refused(pair, tmp_path):
    lora = diffsynth_lora(official_state(pair.models["low_noise"]), seed=0)
    for part in ("A", "B"):
        key = f"self_attn.q.lora_{part}.default.weight"
        lora[f"blocks.2.{key}"] = lora[f"blocks.1.{key}"].clone()
    _refused(
        pair,
        tmp_path,
        lora,
        r"'blocks.2.self_attn.q.lora_A.default.weight' targets layer 2, but the model has 2",
    )


def test_lora_for_an_unknown_module_is_refused(pair, tmp_path):
    lora = diffsynth_lora(official_state(pair.models["low_noise"]), seed=0)
    lora["blocks.0.cross_attn.k_img.lora_A.default.weight"] = torch.zeros(RANK, 48)
    lora["blocks.0.cross_attn.k_img.lora_B.default.weight"] = torch.zeros(48, RANK)
    _refused(
        pair, tmp_path, lora, r"'blocks.0.cross_attn.k_img.lora_.\.default.weight' targets .* not a Linear"
    )


def test_unpaired_and_foreign_keys_are_refused(pair, tmp_path):
    lora = diffsynth_lora(official_state(pair.models["low_noise"]), seed=0)
    del lora["blocks.1.ffn.2.lora_B.default.weight"]
    _refused(pair, tmp_path, lora, r"'blocks.1.ffn.2.lora_A.default.weight' has no matching up")
    lora = diffsynth_lora(official_state(pair.models["low_noise"]), seed=0)
    lora["blocks.0.self_attn.q.weight"] = torch.zeros(48, 48)
    _refused(pair, tmp_path, lora, r"'blocks.0.self_attn.q.weight' is not a LoRA tensor")


def test_unknown_expert_is_refused(pair, tmp_path, capsys):
    with pytest.raises(ValueError, match="expert 'dit'.*high_noise, low_noise"):
        cj.convert_checkpoint(
            pair.root / "src", tmp_path / "out", loras={"dit": [(pair.files["high_noise"], 1.0)]}
        )
    argv = ["convert", str(pair.root / "src"), str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        cli_main([*argv, "--lora", f"mid={pair.files['high_noise']}"])
    assert info.value.code == 2 and "unknown expert 'mid'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- other key styles, CLI


def test_kohya_style_alpha_prefix_and_diffusers_names(pair):
    """`lora_up`/`lora_down` + `alpha` with the `diffusion_model.` prefix, and Diffusers module names."""
    model = pair.models["high_noise"]
    state = official_state(model)
    gen = torch.Generator().manual_seed(5)
    lora = {
        "diffusion_model.blocks.1.ffn.0.lora_down.weight": torch.randn(RANK, 48, generator=gen),
        "diffusion_model.blocks.1.ffn.0.lora_up.weight": torch.randn(96, RANK, generator=gen),
        "diffusion_model.blocks.1.ffn.0.alpha": torch.tensor(2.0),
        "blocks.0.attn2.to_out.0.lora_A.weight": torch.randn(RANK, 48, generator=gen),
        "blocks.0.attn2.to_out.0.lora_B.weight": torch.randn(48, RANK, generator=gen),
        "proj_out.lora_A.weight": torch.randn(RANK, 48, generator=gen),
        "proj_out.lora_B.weight": torch.randn(64, RANK, generator=gen),
    }
    path = save(lora, pair.root / "kohya" / "lora.safetensors")
    config = open_checkpoint(pair.root / "src").experts[0].config
    opened = read_lora(path, config, strength=0.5)
    assert sorted(opened.updates) == [
        "blocks.0.cross_attn.o.weight",
        "blocks.1.ffn.0.weight",
        "head.head.weight",
    ]
    as_official = {  # the same LoRA under DiffSynth's official names, for the reference fuse
        k.replace("attn2.to_out.0", "cross_attn.o").replace("proj_out", "head.head"): v
        for k, v in lora.items()
    }
    fused = diffsynth_fuse(state, as_official, alpha=0.5)
    for target in opened.updates:
        ours = merge_weight(target, state[target].numpy(), [opened])
        np.testing.assert_allclose(ours, fused[target].numpy(), rtol=0, atol=5e-7)  # 2 ulp at |W| ~ 2.4


def test_cli_merges_a_single_expert_model(tmp_path):
    model = make_reference(seed=4)
    save_official(model, tmp_path / "src")
    state = official_state(model)
    lora = diffsynth_lora(state, seed=6, layers=[1], modules=["self_attn.v"])
    path = save(lora, tmp_path / "lora.safetensors")
    argv = ["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--dtype", "float32", "--quiet"]
    assert cli_main([*argv, "--lora", f"dit={path}", "--lora-strength", "0.5"]) == 0
    dit = cj.load_dit(tmp_path / "out")
    ref = diffsynth_fuse(state, lora, alpha=0.5)["blocks.1.self_attn.v.weight"].numpy().T
    np.testing.assert_allclose(dit.params["blocks"]["self_attn"]["v"]["kernel"][1], ref, rtol=0, atol=2e-7)
    meta = json.loads((tmp_path / "out" / "cosjax_dit.json").read_text())
    assert meta["loras"] == {"dit": [{"path": str(path.resolve()), "strength": 0.5, "weights": 1}]}


def test_merge_into_a_diffusers_layout_checkpoint(tmp_path):
    """Official-named LoRA keys land on the right tensors of a Diffusers-layout source too."""
    model = make_reference(seed=8)
    model.save_pretrained(tmp_path / "src")
    state = official_state(model)
    lora = diffsynth_lora(state, seed=9)
    (expert,) = open_checkpoint(tmp_path / "src").experts
    merged = with_loras(expert, [read_lora(save(lora, tmp_path / "lora.safetensors"), expert.config)])
    fused = diffsynth_fuse(state, lora)
    for diffusers_name in ("blocks.0.attn2.to_out.0.weight", "blocks.1.ffn.net.0.proj.weight"):
        ref = fused[official_key(diffusers_name)]
        np.testing.assert_allclose(merged.tensors[diffusers_name].read(), ref, rtol=0, atol=2e-7)
    assert merged.tensors["blocks.0.attn2.to_out.0.bias"] is expert.tensors["blocks.0.attn2.to_out.0.bias"]

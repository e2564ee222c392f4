"""Conversion streams: peak memory stays near one shard plus one stacked tensor, not the checkpoint.

A ~400 MB float32 checkpoint in the official layout (24 layers, 5 shards) is converted in a fresh
subprocess. Its peak resident memory (VmHWM, reset after imports and a warm-up conversion so that
library code and thread pools are not counted) must stay under the largest shard + the largest
stacked output tensor + a 128 MiB margin (library buffers: tensorstore holds ~0.7 of a leaf while
writing it), well below the 400 MB the checkpoint holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import cosjax as cj
from cosjax.weights.dit_keys import expected_keys, leaf_shapes, torch_shape

MiB = 2**20
CONFIG = cj.DiTConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=24, in_dim=16, out_dim=16, text_dim=512)


def _write_checkpoint(folder: Path, config: cj.DiTConfig, num_shards: int) -> int:
    """Random official-layout shards written one at a time; returns the largest shard's size."""
    folder.mkdir(parents=True)
    leaves = leaf_shapes(config)
    keys = list(expected_keys(config, "official").items())
    rng = np.random.default_rng(0)
    sizes = np.array([np.prod(torch_shape(spec, leaves[spec.path], config)) for _, (spec, _) in keys])
    shard_of = np.minimum((np.cumsum(sizes) - 1) * num_shards // sizes.sum(), num_shards - 1)  # by bytes
    weight_map = {}
    for i in range(num_shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        part = [item for item, s in zip(keys, shard_of, strict=True) if s == i]
        tensors = {
            key: rng.standard_normal(torch_shape(spec, leaves[spec.path], config), np.float32)
            for key, (spec, _) in part
        }
        save_file(tensors, str(folder / name))
        weight_map.update({key: name for key, _ in part})
        del tensors
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": weight_map})
    )
    c = config
    (folder / "config.json").write_text(
        json.dumps(
            dict(
                dim=c.dim,
                ffn_dim=c.ffn_dim,
                num_heads=c.num_heads,
                num_layers=c.num_layers,
                in_dim=c.in_dim,
                out_dim=c.out_dim,
                model_type="t2v",
                text_len=512,
                text_dim=c.text_dim,
                freq_dim=c.freq_dim,
                eps=c.eps,
            )
        )
    )
    return max(p.stat().st_size for p in folder.glob("*.safetensors"))


_CHILD = textwrap.dedent(
    """
    import json, re, sys
    import cosjax as cj
    warm, big, out, dtype = sys.argv[1:]
    cj.convert_checkpoint(warm, out + "-warm", dtype=dtype, progress=False)

    def status(field):
        return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    base = status("VmRSS")
    cj.convert_checkpoint(big, out, dtype=dtype, progress=False)
    print(json.dumps({"base": base, "peak": status("VmHWM")}))
    """
)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conversion_peak_memory(tmp_path, dtype):
    largest_shard = _write_checkpoint(tmp_path / "big", CONFIG, num_shards=5)
    total = sum(p.stat().st_size for p in (tmp_path / "big").glob("*.safetensors"))
    _write_checkpoint(tmp_path / "warm", cj.DiTConfig(**{**CONFIG.to_dict(), "num_layers": 1}), num_shards=1)
    itemsize = np.dtype(np.float32 if dtype == "float32" else np.float16).itemsize
    largest_leaf = max(int(np.prod(s)) for s in leaf_shapes(CONFIG).values()) * itemsize
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(tmp_path / "warm"),
            str(tmp_path / "big"),
            str(tmp_path / "out"),
            dtype,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = result["peak"] - result["base"]
    budget = largest_shard + largest_leaf + 128 * MiB
    print(
        f"{dtype}: checkpoint {total / MiB:.0f} MiB, largest shard {largest_shard / MiB:.0f} MiB, "
        f"largest stacked leaf {largest_leaf / MiB:.0f} MiB, peak growth {growth / MiB:.0f} MiB, "
        f"budget {budget / MiB:.0f} MiB"
    )
    assert total > 350 * MiB
    assert growth < budget
    assert cj.load_dit(tmp_path / "out").config == CONFIG

"""The toy package's boundaries: inference never loads the trainer; the model folder's metadata
updates are atomic and checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cosjax.models.dit import init_params
from cosjax.toy.codec import prompt_embeddings
from cosjax.toy.config import toy_dit_config
from cosjax.toy.model_file import TOY_FILE, load_toy, save_toy, update_meta

ROOT = Path(__file__).resolve().parents[1]

# What the trainer needs and inference must not load: the trainer itself, its optimiser and Orbax.
TRAINER_ONLY = ("cosjax.toy.train", "optax", "orbax.checkpoint")

SAMPLE_THE_TOY = """
import json, sys
import jax
import experiments
from experiments import common  # what every experiment builds on
from experiments.common import load_subject

subject = load_subject(None)  # the embedded toy model
cases = subject.cases("move", 1)
settings = subject.settings(steps=2)
latents = jax.jit(subject.sampler(steps=2))(subject.condition(cases, settings), jax.random.key(0)).latents
video = subject.decode(latents, cases)
score = subject.score(cases[0], video[0])
print(json.dumps({"shape": list(video.shape), "loaded": [m for m in TRAINER_ONLY if m in sys.modules]}))
"""


def test_sampling_the_toy_loads_no_trainer():
    """Loading, sampling, decoding and scoring the embedded toy model (and importing the experiments'
    common code) imports neither `cosjax.toy.train` nor optax / Orbax (a fresh process)."""
    code = f"TRAINER_ONLY = {TRAINER_ONLY!r}\n{SAMPLE_THE_TOY}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [1, 9, 32, 32, 3]
    assert out["loaded"] == []


@pytest.fixture
def toy(tmp_path):
    cfg = toy_dit_config(dim=16, num_layers=1, num_heads=2, patch_size=(1, 8, 8), text_dim=8)
    table = prompt_embeddings(0, 4, cfg.text_len, cfg.text_dim)
    return save_toy(tmp_path / "toy", cfg, init_params(cfg, jax.random.key(0)), table, (9, 32, 32))


def test_update_meta_replaces_toy_json_atomically(toy):
    before = json.loads((toy / TOY_FILE).read_text())
    check = {"solved": 3, "of": 4}
    meta = update_meta(toy, reference_check=check, sampling=dict(before["sampling"], steps=7))
    assert meta["reference_check"] == check and meta["sampling"]["steps"] == 7
    _, loaded, table = load_toy(toy)
    assert loaded == meta and {
        k: v for k, v in loaded.items() if k not in ("reference_check", "sampling")
    } == {k: v for k, v in before.items() if k != "sampling"}
    np.testing.assert_array_equal(table, np.asarray(before["prompt_embeddings"], np.float32))
    assert sorted(p.name for p in toy.iterdir()) == ["toy.json", "toy.safetensors"]  # no temp file left


def test_update_meta_refuses_other_folders(toy, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / TOY_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="is not a cosjax-pixel-toy export"):
        update_meta(other, reference_check={})
    assert json.loads((other / TOY_FILE).read_text()) == {"format": "something-else"}
    with pytest.raises(ValueError, match="local"):
        update_meta("gs://bucket/toy", reference_check={})


def test_recipe_counts_one_for_all_or_one_per_family():
    from experiments.train_toy import Recipe, counts

    assert counts(Recipe(families=("move", "pattern"), per_family=(8,))) == (8, 8)
    assert counts(Recipe(families=("move", "pattern"), per_family=(8, 24))) == (8, 24)
    with pytest.raises(ValueError, match="3 counts for 2 families"):
        counts(Recipe(families=("move", "pattern"), per_family=(1, 2, 3)))

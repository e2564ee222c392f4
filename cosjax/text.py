"""Prompts to umT5 context embeddings: Wan's cleaning, the umT5 tokenizer, and a cached encoder.

`wan22.md` section 7. A prompt is cleaned (`clean_prompt`), tokenized with the `google/umt5-xxl`
tokenizer (`padding='max_length', max_length=512, truncation=True`, `</s>` (id 1) appended, pad id 0),
run through the umT5 encoder (`cosjax.models.t5`), and each row is trimmed to its true length
(prompt tokens plus `</s>`) and zero-padded back to 512 rows: the DiT's context input.

The tokenizer reads the folder's `tokenizer.json` with the `tokenizers` library, unmodified: that
is the pipeline transformers 4.x's `AutoTokenizer` (which Wan calls) runs on the same folder.

`TextEncoder` optionally keeps an on-disk cache of the trimmed embeddings, one `.npz` file per
(token ids, model fingerprint), so that a sweep reusing prompts encodes each prompt once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from cosjax.models import t5
from cosjax.models.t5 import TEXT_LEN, T5Config
from cosjax.paths import require_local, staged_file, user_path
from cosjax.tokenizer import UMT5Tokenizer, clean_prompt  # noqa: F401 (re-exported: cosjax.text.UMT5Tokenizer)
from cosjax.weights.names import DIFFUSERS_T5_WEIGHTS, OFFICIAL_T5_WEIGHTS, TOKENIZER_DIRS
from cosjax.weights.read import load_t5

log = logging.getLogger(__name__)

# Bump when a change to the encoder's numerics or to the cache format makes old entries stale.
CACHE_VERSION = 1


def _leaf_sample(leaf, per_axis: int = 16) -> np.ndarray:
    """About `per_axis` evenly strided entries along each axis of a leaf (a cheap weight digest)."""
    index = tuple(slice(None, None, max(1, n // per_axis)) for n in leaf.shape)
    return np.ascontiguousarray(np.asarray(leaf[index]))


def model_fingerprint(config: T5Config, params: dict) -> str:
    """A hex digest identifying an encoder: config, cache version, and per leaf its path, shape,
    dtype and the exact bits of a strided sample (a few thousand entries; the weights are not read
    in full). Equal weights give equal fingerprints on any machine and sharding."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": CACHE_VERSION, "config": dataclasses.asdict(config)}).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        sample = _leaf_sample(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{tuple(leaf.shape)}|{np.dtype(leaf.dtype)}|".encode())
        h.update(sample.tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """Trimmed prompt embeddings on disk, one `.npz` per (model fingerprint, token ids).

    Layout: `root/<fingerprint[:16]>/<sha256(fingerprint, ids)>.npz` holding `embedding` (float32
    [L, D], or its bfloat16 bits as uint16 when that is exact, as for a bfloat16 encoder), `dtype`,
    `ids` int32 [L] (checked on load) and `prompt` (the cleaned text, for inspection). Files are
    written to a temporary name and renamed, so readers never see a partial file; an unreadable or
    inconsistent file is reported, treated as a miss and rewritten.
    """

    def __init__(self, root: str | Path, fingerprint: str):
        self.root = require_local(user_path(root), "the prompt-embedding cache", "give a local cache_dir")
        self.fingerprint = fingerprint
        self.folder = self.root / fingerprint[:16]

    def path(self, ids: np.ndarray) -> Path:
        """The entry of one prompt's true-length token ids (int32 [L])."""
        h = hashlib.sha256(self.fingerprint.encode())
        h.update(np.ascontiguousarray(ids, np.int32).tobytes())
        return self.folder / f"{h.hexdigest()}.npz"

    def load(self, ids: np.ndarray, d_model: int) -> np.ndarray | None:
        """The cached float32 [L, d_model] embedding of `ids` (int32 [L]), or None."""
        path = self.path(ids)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored, dtype, got_ids = z["embedding"], str(z["dtype"]), z["ids"]
            if not np.array_equal(got_ids, ids):
                raise ValueError("token ids differ from the entry's name")
            if dtype == "bfloat16" and stored.dtype == np.uint16:
                embedding = stored.view(ml_dtypes.bfloat16).astype(np.float32)
            elif dtype == "float32" and stored.dtype == np.float32:
                embedding = stored
            else:
                raise ValueError(f"unexpected stored dtype {stored.dtype} ({dtype})")
            if embedding.shape != (len(ids), d_model):
                raise ValueError(f"shape {embedding.shape}, expected {(len(ids), d_model)}")
        except Exception as e:  # a corrupt zip, missing member, bad header...: re-encode
            log.warning("%s: unreadable prompt-embedding cache entry (%s); re-encoding", path, e)
            return None
        return embedding

    def store(self, ids: np.ndarray, embedding: np.ndarray, prompt: str = "") -> None:
        """Writes one entry atomically; a failed write is logged, never raised."""
        path = self.path(ids)
        bits = embedding.astype(ml_dtypes.bfloat16)
        if np.array_equal(bits.astype(np.float32), embedding):
            stored, dtype = bits.view(np.uint16), "bfloat16"
        else:
            stored, dtype = np.asarray(embedding, np.float32), "float32"
        try:
            with staged_file(path) as tmp, open(tmp, "wb") as f:  # atomic; the mode follows the umask
                np.savez(
                    f,
                    embedding=stored,
                    dtype=np.array(dtype),
                    ids=np.asarray(ids, np.int32),
                    prompt=np.array(prompt),
                )
        except OSError as e:
            log.warning("%s: cannot write prompt-embedding cache entry (%s)", path, e)


def _find(root: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"{root}: no {what} (looked for {', '.join(names)})")


class TextEncoder:
    """Prompts to Wan's umT5 context: `__call__(prompts) -> float32 [B, text_len, d_model]`.

    Usable as `Pipeline.text_encoder`. The encoder (`cosjax.models.t5.encode_padded`) is jitted,
    compiled once per batch size (rows are always `text_len` tokens).

    Attributes:
      config: the encoder architecture.
      params: its parameter tree (see `cosjax.models.t5`).
      tokenizer: a `UMT5Tokenizer`.
      cache: an `EmbeddingCache`, or None to always encode.
      text_len: tokens per prompt (512).
    """

    def __init__(
        self,
        config: T5Config,
        params: dict,
        tokenizer: UMT5Tokenizer,
        cache_dir: str | Path | None = None,
        text_len: int = TEXT_LEN,
    ):
        self.config, self.params, self.tokenizer, self.text_len = config, params, tokenizer, text_len
        self.cache = (
            None if cache_dir is None else EmbeddingCache(cache_dir, model_fingerprint(config, params))
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        cache_dir: str | Path | None = None,
        dtype=None,
        config: T5Config | None = None,
        allow_nonfinite: bool = False,
    ) -> TextEncoder:
        """Loads the tokenizer and encoder of an official Wan or a Diffusers repo folder.

        Args:
          path: a repo folder holding `google/umt5-xxl/` (official) or `tokenizer/` (Diffusers) and
            `models_t5_umt5-xxl-enc-bf16.pth` (official) or `text_encoder/` (Diffusers, or an Orbax
            folder with `cosjax_t5.json` written by `cosjax convert`).
          cache_dir: folder of the prompt-embedding cache; None disables it.
          dtype: parameter dtype (float32, bfloat16, float16); None keeps the stored one.
          config: architecture override (see `cosjax.weights.read.load_t5`).
          allow_nonfinite: keep weights holding NaN or inf (by default refused naming key and file).
        """
        root = user_path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder")
        tokenizer = UMT5Tokenizer.from_dir(_find(root, TOKENIZER_DIRS, "tokenizer folder"))
        weights = _find(root, (OFFICIAL_T5_WEIGHTS, DIFFUSERS_T5_WEIGHTS), "umT5 encoder weights")
        config, params = load_t5(weights, config=config, dtype=dtype, allow_nonfinite=allow_nonfinite)
        return cls(config, params, tokenizer, cache_dir)

    def encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> jax.Array:
        """Encoder output trimmed to each row's true length and zero-padded.

        Args:
          ids: int32 [B, text_len] token ids.
          mask: int32 [B, text_len], 1 at real tokens.

        Returns:
          float32 [B, text_len, d_model].
        """
        return t5.encode_padded(
            self.params, jnp.asarray(ids), jnp.asarray(mask), self.config, text_len=self.text_len
        )

    def __call__(self, prompts: Sequence[str]) -> jax.Array:
        """Embeds prompts: float32 [B, text_len, d_model], zero rows past each prompt's length.

        With a cache, prompts found on disk are not encoded; the others are encoded together (each
        distinct one once) and stored.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            return jnp.zeros((0, self.text_len, self.config.d_model), jnp.float32)
        ids, mask = self.tokenizer.tokenize(prompts, self.text_len)
        if self.cache is None:
            return self.encode_ids(ids, mask)
        lengths = mask.sum(axis=1)
        rows = [ids[i, :n] for i, n in enumerate(lengths)]
        out = np.zeros((len(rows), self.text_len, self.config.d_model), np.float32)
        misses: dict[bytes, list[int]] = {}
        for i, row in enumerate(rows):
            embedding = self.cache.load(row, self.config.d_model)
            if embedding is None:
                misses.setdefault(row.tobytes(), []).append(i)
            else:
                out[i, : len(row)] = embedding
        if misses:
            first = [group[0] for group in misses.values()]
            encoded = np.asarray(self.encode_ids(ids[first], mask[first]))
            for group, embedding in zip(misses.values(), encoded, strict=True):
                n = len(rows[group[0]])
                self.cache.store(rows[group[0]], embedding[:n], clean_prompt(prompts[group[0]]))
                out[group] = embedding
        return jnp.asarray(out)

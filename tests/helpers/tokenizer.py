"""A tiny umT5-like tokenizer written offline (the `tokenizers` package; no torch, no download).

Shaped like umT5's: `<pad>` = 0, `</s>` = 1, `<unk>` = 2, a Metaspace pre-tokenizer and a
post-processor appending `</s>`.
"""

from __future__ import annotations

import json
from pathlib import Path

from cosjax.models.t5 import TEXT_LEN

WORDS = ("a", "the", "cat", "dog", "on", "red", "mat", "car", "café", "fine", "jerry", "tom")
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:'\"&<>/!?-é"


def write_tokenizer(folder: Path) -> Path:
    """A tiny umT5-like tokenizer.json (+ tokenizer_config.json for AutoTokenizer) in `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [(c, -5.0) for c in CHARS] + [(f"▁{w}", -2.0) for w in WORDS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "T5Tokenizer",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "extra_ids": 0,
        "model_max_length": TEXT_LEN,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def vocab_size(folder: Path) -> int:
    """Entries in the vocabulary of the tokenizer written by `write_tokenizer(folder)`."""
    return len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])

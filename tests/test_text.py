"""Prompt cleaning, umT5 tokenization and the cached `TextEncoder`, against transformers.

Everything is built offline: a tiny Unigram `tokenizer.json` shaped like umT5's (`<pad>` = 0,
`</s>` = 1, `<unk>` = 2, a Metaspace pre-tokenizer, a post-processor appending `</s>`), and tiny
random `UMT5EncoderModel`s saved with `save_pretrained` next to it in a Diffusers-style repo folder
(`tokenizer/`, `text_encoder/`). The reference cleaning below is written from `wan22.md` section 7
(ftfy, html.unescape twice, strip, `regex` \\s+ -> " ").

Tolerance: float32 relative error <= 1e-5 per prompt on its real rows (same reasoning as
`test_t5_parity.py`); rows past a prompt's length must be exactly zero on both sides.
"""

from __future__ import annotations

import html
import logging
import re

import jax
import numpy as np
import pytest
from helpers.layouts import official_t5_state
from helpers.numerics import relative_error
from helpers.tokenizer import write_tokenizer

from cosjax import text, tokenizer
from cosjax.models import t5
from cosjax.weights import names

ftfy = pytest.importorskip("ftfy")
regex = pytest.importorskip("regex")

TEXT_LEN = t5.TEXT_LEN
TOL = 1e-5
LONG = " ".join(["the red cat sat on a mat, and a dog drove the car."] * 60)  # > 700 tokens
PROMPTS = [
    "A red cat on the mat.",
    "",
    "  Tom &amp;amp; Jerry\t\n drive   a  CAR&nbsp;!  ",
    "cafÃ© “fine” ﬁne ＡＢＣ 東京 <b>dog</b>",
    LONG,
]


def reference_clean(s: str) -> str:
    s = html.unescape(html.unescape(ftfy.fix_text(s))).strip()
    return regex.sub(r"\s+", " ", s).strip()


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Two Diffusers-style repo folders (same tokenizer, different weights) and their models."""
    from helpers.torch_refs import write_text_encoder

    root = tmp_path_factory.mktemp("text")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        folder = root / name
        model = write_text_encoder(folder / "tokenizer", folder / "text_encoder", seed)
        out[name] = (folder, model)
    return out


@pytest.fixture(scope="module")
def hf_tokenizers(repos):
    """transformers' tokenizers on the same folder: AutoTokenizer (T5Tokenizer) and the plain
    tokenizer.json backend (what transformers 4.x's T5TokenizerFast ran)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = repos["a"][0] / "tokenizer"
    auto = AutoTokenizer.from_pretrained(folder)
    plain = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    return {"auto": auto, "plain": plain}


def hf_tokenize(tokenizer, prompts):
    out = tokenizer(
        [reference_clean(p) for p in prompts],
        padding="max_length",
        max_length=TEXT_LEN,
        truncation=True,
        add_special_tokens=True,
        return_tensors="np",
    )
    return out["input_ids"], out["attention_mask"]


def hf_context(model, ids, mask) -> np.ndarray:
    """transformers' encoder output, each row trimmed to its length and zero-padded (Wan's context)."""
    from helpers.torch_refs import torch

    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
    hidden = hidden.last_hidden_state.numpy()
    out = np.zeros_like(hidden)
    for row, n in enumerate(mask.sum(axis=1)):
        out[row, :n] = hidden[row, :n]
    return out


@pytest.fixture
def count_encodes(monkeypatch):
    """Counts calls to (and prompts through) the jitted encoder."""
    calls = []
    original = t5.encode_padded

    def counting(params, ids, mask, *args, **kwargs):
        calls.append(ids.shape[0])
        return original(params, ids, mask, *args, **kwargs)

    monkeypatch.setattr(t5, "encode_padded", counting)
    return calls


# --- cleaning -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, want",
    [
        ("Tom &amp;amp; Jerry", "Tom & Jerry"),  # double-escaped entity
        ("<b>bold</b> &amp;amp;lt;3", "<b>bold</b> &lt;3"),  # markup: ftfy leaves it, exactly 2 unescapes
        ("cafÃ© crÃ¨me", "café crème"),  # mojibake
        ("donÃ¢â‚¬â„¢t", "don't"),  # a doubly mis-decoded curly apostrophe
        ("“quoted” ﬁne ＡＢＣ", '"quoted" fine ABC'),  # uncurled, ligature, full width
        ("  a \t\n\r b\u00a0\u3000c&nbsp;&nbsp;d  ", "a b c d"),  # every whitespace run -> one space
        ("&nbsp;x&nbsp;", "x"),  # entities that become whitespace are stripped
        ("a\x1cb\x1f c", "ab c"),  # control characters removed (and not whitespace for Wan)
        ("", ""),
    ],
)
def test_clean_prompt(raw, want):
    assert text.clean_prompt(raw) == want
    assert reference_clean(raw) == want


def test_whitespace_matches_regex_module():
    """Our `re` class collapses exactly the characters `regex`'s \\s does (Unicode White_Space)."""
    chars = [chr(c) for c in range(0x3100) if re.match(r"\s", chr(c)) or regex.match(r"\s", chr(c))]
    assert len(chars) > 20
    for c in chars:
        s = f"x{c}{c}y"
        assert tokenizer._WHITESPACE.sub(" ", s) == regex.sub(r"\s+", " ", s), hex(ord(c))


# --- tokenizer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["auto", "plain"])
def test_tokenize_matches_transformers(repos, hf_tokenizers, which):
    tok = text.UMT5Tokenizer.from_dir(repos["a"][0] / "tokenizer")
    ids, mask = tok.tokenize(PROMPTS)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    assert ids.shape == mask.shape == (len(PROMPTS), TEXT_LEN)
    want_ids, want_mask = hf_tokenize(hf_tokenizers[which], PROMPTS)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    lengths = mask.sum(axis=1)
    assert lengths[1] == 1 and ids[1, 0] == 1  # the empty prompt is just </s>
    assert (ids[np.arange(len(PROMPTS)), lengths - 1] == 1).all()  # every row ends with </s>
    assert (ids[mask == 0] == 0).all()  # padded with <pad> = 0
    assert (ids[3, : lengths[3]] == 2).any()  # 東京 is not in the vocabulary: <unk>


def test_long_prompt_truncated_with_warning(repos, caplog):
    tok = text.UMT5Tokenizer.from_dir(repos["a"][0] / "tokenizer")
    with caplog.at_level(logging.WARNING, logger="cosjax.text"):
        ids, mask = tok.tokenize(["a red cat", LONG])
    assert mask.sum(axis=1).tolist() == [4, TEXT_LEN]
    assert ids[1, -1] == 1 and (ids[1, :-1] != 1).all()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "prompt 1 has" in warnings[0].getMessage()
    assert f"truncated to {TEXT_LEN} tokens" in warnings[0].getMessage()


def test_missing_tokenizer_json(tmp_path):
    folder = tmp_path / "google" / "umt5-xxl"
    folder.mkdir(parents=True)
    (folder / "spiece.model").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder)) + ".*no tokenizer.json"):
        text.UMT5Tokenizer.from_dir(folder)
    with pytest.raises(FileNotFoundError, match="umT5 encoder weights"):
        write_tokenizer(folder)
        text.TextEncoder.from_pretrained(tmp_path)


# --- encoder and cache ----------------------------------------------------------------------------


def test_encoder_matches_transformers(repos, hf_tokenizers):
    folder, model = repos["a"]
    encoder = text.TextEncoder.from_pretrained(folder)
    out = np.asarray(encoder(PROMPTS))
    assert out.dtype == np.float32 and out.shape == (len(PROMPTS), TEXT_LEN, 32)
    ids, mask = hf_tokenize(hf_tokenizers["auto"], PROMPTS)
    want = hf_context(model, ids, mask)
    lengths = mask.sum(axis=1)
    errors = [relative_error(out[i, :n], want[i, :n]) for i, n in enumerate(lengths)]
    print(f"\ncontext float32 relative error per prompt (lengths {lengths.tolist()}): {errors}")
    assert max(errors) <= TOL
    for i, n in enumerate(lengths):
        assert not out[i, n:].any()


def test_official_layout(repos, tmp_path):
    """`google/umt5-xxl/` + `models_t5_umt5-xxl-enc-bf16.pth` (official names) give the same context."""
    from helpers.torch_refs import torch

    folder, model = repos["a"]
    write_tokenizer(tmp_path / "google" / "umt5-xxl")
    torch.save(official_t5_state(model.state_dict()), tmp_path / names.OFFICIAL_T5_WEIGHTS)
    diffusers = text.TextEncoder.from_pretrained(folder)
    official = text.TextEncoder.from_pretrained(tmp_path, config=diffusers.config)
    prompts = PROMPTS[:3]
    np.testing.assert_array_equal(np.asarray(official(prompts)), np.asarray(diffusers(prompts)))


def test_cache_hits_skip_the_encoder(repos, tmp_path, count_encodes):
    encoder = text.TextEncoder.from_pretrained(repos["a"][0], cache_dir=tmp_path)
    prompts = ["a red cat", "the dog", "a  red cat ", "a car"]  # 1st and 3rd clean to the same prompt
    first = np.asarray(encoder(prompts))
    assert count_encodes == [3]  # one batch of the three distinct prompts
    np.testing.assert_array_equal(first[0], first[2])
    assert len(list(tmp_path.rglob("*.npz"))) == 3

    second = np.asarray(encoder(prompts))
    assert count_encodes == [3]  # all read from disk
    np.testing.assert_array_equal(second, first)

    # a fresh encoder (new process, same model) finds the entries; only the new prompt is encoded
    again = text.TextEncoder.from_pretrained(repos["a"][0], cache_dir=tmp_path)
    mixed = np.asarray(again(["the dog", "on the mat"]))
    assert count_encodes == [3, 1]
    np.testing.assert_array_equal(mixed[0], first[1])
    assert len(list(tmp_path.rglob("*.npz"))) == 4
    assert not list(tmp_path.rglob("*.tmp"))

    uncached = np.asarray(text.TextEncoder.from_pretrained(repos["a"][0])(prompts))
    np.testing.assert_allclose(first, uncached, rtol=1e-6, atol=1e-6)


def test_cache_is_per_model(repos, tmp_path, count_encodes):
    prompts = ["a red cat", "the dog"]
    a = text.TextEncoder.from_pretrained(repos["a"][0], cache_dir=tmp_path)
    b = text.TextEncoder.from_pretrained(repos["b"][0], cache_dir=tmp_path)
    assert a.cache.fingerprint != b.cache.fingerprint
    out_a = np.asarray(a(prompts))
    out_b = np.asarray(b(prompts))
    assert count_encodes == [2, 2]  # b did not reuse a's entries
    assert np.abs(out_a - out_b).max() > 1e-2
    assert len(list(tmp_path.rglob("*.npz"))) == 4
    # the same weights in bfloat16 are another model too
    c = text.TextEncoder.from_pretrained(repos["a"][0], cache_dir=tmp_path, dtype="bfloat16")
    assert c.cache.fingerprint != a.cache.fingerprint
    out_c = np.asarray(c(prompts))
    assert count_encodes == [2, 2, 2]
    np.testing.assert_array_equal(np.asarray(c(prompts)), out_c)  # bf16 outputs stored exactly
    assert count_encodes == [2, 2, 2]


def test_corrupt_cache_entry_is_rewritten(repos, tmp_path, count_encodes, caplog):
    encoder = text.TextEncoder.from_pretrained(repos["a"][0], cache_dir=tmp_path)
    first = np.asarray(encoder(["a red cat"]))
    (entry,) = tmp_path.rglob("*.npz")
    entry.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="cosjax.text"):
        second = np.asarray(encoder(["a red cat"]))
    assert "unreadable prompt-embedding cache entry" in caplog.text and str(entry) in caplog.text
    assert count_encodes == [1, 1]
    np.testing.assert_array_equal(second, first)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cosjax.text"):
        np.testing.assert_array_equal(np.asarray(encoder(["a red cat"])), first)
    assert count_encodes == [1, 1] and not caplog.records  # rewritten, readable again


def test_fingerprint_is_cheap_and_exact(repos):
    encoder = text.TextEncoder.from_pretrained(repos["a"][0])
    fp = text.model_fingerprint(encoder.config, encoder.params)
    assert fp == text.model_fingerprint(encoder.config, jax.tree.map(np.asarray, encoder.params))
    params = jax.tree.map(np.array, encoder.params)
    params["norm"][0] += 1e-3
    assert text.model_fingerprint(encoder.config, params) != fp

"""The umT5 tokenizer and Wan's prompt cleaning (`docs/` wan22.md section 7).

A prompt is cleaned (`clean_prompt`) and tokenized with the `google/umt5-xxl` tokenizer
(`padding='max_length', max_length=512, truncation=True`, `</s>` (id 1) appended, pad id 0). The
tokenizer reads the folder's `tokenizer.json` with the `tokenizers` library, unmodified: that is the
pipeline transformers 4.x's `AutoTokenizer` (which Wan calls) runs on the same folder.

Its own module so that the converter can check a repo's tokenizer without importing the encoder
(`cosjax.text`, which loads weights).
"""

from __future__ import annotations

import html
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cosjax.models.t5 import TEXT_LEN
from cosjax.paths import user_path

log = logging.getLogger(__name__)

# Wan collapses whitespace with the `regex` module, whose \s is Unicode White_Space. Python's `re`
# \s also matches U+001C..U+001F (which are not White_Space), so they are excluded here.
_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning (`clean='whitespace'`).

    `ftfy.fix_text` (mojibake, curly quotes, ligatures, full-width forms, control characters, HTML
    entities outside markup), then `html.unescape` twice, strip, collapse every whitespace run to
    one space and strip again.
    """
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


class UMT5Tokenizer:
    """The umT5 tokenizer, read from a folder's `tokenizer.json` (a `tokenizers.Tokenizer`).

    Attributes:
      tokenizer: the `tokenizers.Tokenizer` (its truncation and padding are set on every call).
      pad_id: id of `<pad>` (0 for umT5).
      source: where it was read from (named in messages).
    """

    def __init__(self, tokenizer, source: object = "tokenizer"):
        self.tokenizer = tokenizer
        self.source = source
        self.pad_id = tokenizer.token_to_id("<pad>")
        if self.pad_id is None:
            raise ValueError(f"{source}: the tokenizer has no <pad> token")
        processor = tokenizer.post_processor
        if processor is None or processor.num_special_tokens_to_add(False) < 1:
            raise ValueError(f"{source}: the tokenizer's post-processor does not append </s>")
        self._lock = threading.Lock()  # truncation and padding are state of the shared tokenizer

    @classmethod
    def from_dir(cls, folder: str | Path) -> UMT5Tokenizer:
        """Reads `folder/tokenizer.json` (a `google/umt5-xxl` or Diffusers `tokenizer/` folder)."""
        from tokenizers import Tokenizer

        folder = user_path(folder)
        file = folder / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(
                f"{folder}: no tokenizer.json (a SentencePiece spiece.model alone is not read here; "
                "write one with transformers: AutoTokenizer.from_pretrained(folder).save_pretrained(folder))"
            )
        try:
            tokenizer = Tokenizer.from_str(file.read_text())  # local or a URL
        except Exception as e:  # the Rust library raises a plain Exception for bad files
            raise ValueError(f"{file}: cannot read as a tokenizers file ({e})") from None
        return cls(tokenizer, file)

    def tokenize(
        self, prompts: Sequence[str], max_length: int = TEXT_LEN, clean: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, as Wan's `HuggingfaceTokenizer(seq_len=512, clean='whitespace')`.

        Each prompt is cleaned (`clean_prompt`), tokenized, truncated to `max_length` tokens
        including the appended `</s>` (a warning is logged, the reference truncates silently), and
        right-padded with `<pad>`.

        Args:
          prompts: B strings.
          max_length: tokens per row.
          clean: apply `clean_prompt` first.

        Returns:
          (ids int32 [B, max_length], mask int32 [B, max_length]) with mask 1 at real tokens.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        texts = [clean_prompt(p) if clean else p for p in prompts]
        with self._lock:
            self.tokenizer.enable_truncation(
                max_length, stride=0, strategy="longest_first", direction="right"
            )
            self.tokenizer.enable_padding(
                direction="right", pad_id=self.pad_id, pad_token="<pad>", length=max_length
            )
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        ids = np.array([e.ids for e in encodings], np.int32).reshape(len(texts), max_length)
        mask = np.array([e.attention_mask for e in encodings], np.int32).reshape(len(texts), max_length)
        for i, (text, enc) in enumerate(zip(texts, encodings, strict=True)):
            if enc.overflowing:
                _warn_truncated(i, text, enc, max_length)
        return ids, mask

    __call__ = tokenize


def _content(enc) -> list[int]:
    """Positions of an encoding's real, non-special tokens."""
    return [
        j
        for j, (special, real) in enumerate(zip(enc.special_tokens_mask, enc.attention_mask, strict=True))
        if real and not special
    ]


def _warn_truncated(index: int, text: str, enc, max_length: int) -> None:
    kept = _content(enc)
    total = len(kept) + sum(len(_content(o)) for o in enc.overflowing)
    cut = enc.offsets[kept[-1]][1] if kept else 0
    dropped = text[cut:].strip()
    log.warning(
        "prompt %d has %d tokens plus </s>; truncated to %d tokens including </s>, ignoring the last "
        "%d characters: %r",
        index,
        total,
        max_length,
        len(dropped),
        dropped if len(dropped) <= 80 else dropped[:77] + "...",
    )

"""Model code: the Wan DiT and its attention/RoPE. No I/O happens here."""

"""Helpers shared by the test modules, split by what they need.

- `numerics`: comparisons of arrays (numpy only).
- `layouts`: the test suite's own renames between checkpoint layouts (Diffusers/transformers ->
  official Wan key names), written independently of cosjax's key maps; plain strings, no torch.
- `tokenizer`: a tiny umT5-like `tokenizer.json` (the `tokenizers` package, no torch).
- `bench`: a tiny VBVR-Bench-Data folder and its manifest.
- `fakes`: stand-ins (a pooling VAE with Wan2.1's geometry, an interpreter that fails).
- `torch_refs`: tiny random PyTorch reference models (DiT, VAE, umT5) and writers of the real on-disk
  layouts. Importing it skips the importing test (or module) when torch is not installed, so import it
  inside the fixture or test that needs it unless every test of the module does.

Nothing here imports a test module. Shared fixtures are in `tests/conftest.py`.
"""

"""On-disk names: what cosjax writes, and what it looks for in PyTorch Wan repos.

Converted folders (`cosjax convert`, `save_dit`): `cosjax_dit.json` + one Orbax checkpoint per expert
(`dit/`, or `high_noise/` + `low_noise/`), and optionally `vae/` (with `cosjax_vae.json`),
`text_encoder/` (with `cosjax_t5.json`) and `tokenizer/`. Each json names its format and version.
"""

from __future__ import annotations

# --- converted folders (ours) ------------------------------------------------------------------
DIT_METADATA = "cosjax_dit.json"
VAE_METADATA = "cosjax_vae.json"
T5_METADATA = "cosjax_t5.json"
DIT_FORMAT, VAE_FORMAT, T5_FORMAT = "cosjax-dit", "cosjax-vae", "cosjax-t5"
DIT_VERSION = 1  # of cosjax_dit.json
COMPONENT_VERSION = 1  # of cosjax_vae.json / cosjax_t5.json
VAE_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR = "vae", "text_encoder", "tokenizer"

# --- PyTorch Wan repos (theirs) -----------------------------------------------------------------
# Diffusers: transformer/ (+ transformer_2/ for A14B, the low-noise expert), vae/, text_encoder/,
# tokenizer/, model_index.json (its boundary_ratio).
DIFFUSERS_EXPERTS = ("transformer", "transformer_2")
MODEL_INDEX = "model_index.json"
DIFFUSERS_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX_FILE = DIFFUSERS_WEIGHTS_FILE + ".index.json"
# Official: high_noise_model/ + low_noise_model/ (A14B), Wan2.x_VAE.pth (by VAE preset:
# `configs.VAE_FILES`), the umT5 .pth, google/umt5-xxl/.
OFFICIAL_EXPERTS = ("high_noise_model", "low_noise_model")
OFFICIAL_VAE_GLOB = "*VAE.pth"
OFFICIAL_T5_WEIGHTS = "models_t5_umt5-xxl-enc-bf16.pth"
DIFFUSERS_T5_WEIGHTS = "text_encoder"
TOKENIZER_DIRS = ("google/umt5-xxl", "tokenizer")  # official Wan repo, Diffusers repo
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")  # torch.save files (read only for VAE and umT5)
SINGLE_FILE_PREFIX = "model.diffusion_model."  # key prefix of single-file (ComfyUI-style) DiTs

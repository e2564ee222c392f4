"""The embedded toy model: a tiny Wan-architecture I2V DiT on pixel-derived latents (no VAE).

One job per module; inference needs only the first three, never the trainer (nor optax / Orbax):

* `config`: the toy DiT config (`toy_dit_config`) and the channel layout it implies.
* `codec`: the latent codec (videos <-> latents, the I2V conditioning y, prompt embeddings,
  `toy_conditioning` for the sampler).
* `model_file`: the toy model folder (toy.json + toy.safetensors): `save_toy` / `load_toy`, the
  embedded model's path, atomic updates of its metadata.
* `reference`: the reference check a model folder records (solved share on fixed cases), which the
  test suite re-measures on the embedded model.
* `train`: the trainer (optimiser, loss, loop, Orbax checkpoints, export to a model folder).

Imports: codec and model_file read config; train reads all three; `reference` samples through
`cosjax.subjects` (which reads codec and model_file).
This file imports nothing, so `import cosjax.toy.codec` loads no trainer.
"""

"""Information flow (Fig. 3): how far a perturbation at an early step pushes the trajectory away.

    cosjax run information-flow                            # embedded model, 4 cases per toy family
    cosjax run information-flow perturb_steps=0,1,2,4 representation=hidden:3
    cosjax run information-flow --model ckpt/vbvr-wan2.2 --data vbvr-bench:VBVR-Bench-Data cases=1

For each perturbation step p (`noise_at_step(p)`: the latents are replaced by fresh N(0, I) right
before step p's model call) the perturbed trajectory is compared with the clean one at every step
s by the linear-CKA dissimilarity 1 - CKA(X_s, Y_s):
  * representation "x0": X_s = the clean x0-hat at step s as a [tokens, features] matrix, tokens =
    the DiT's patch grid (f, h, w), features = channels x patch volume (the patchified latent);
    Y_s the same for the perturbed run.
  * representation "hidden:K": the residual stream after block K at step s (conditional branch),
    [tokens, dim].
Linear CKA (Kornblith et al. 2019) with rows = tokens, columns centred over tokens:
CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F); it is invariant to orthogonal maps and
isotropic scaling of the features, so it compares *what the tokens encode*, not their scale.
Steps before p are identical (dissimilarity 0). Output: per case a [P, S] matrix; summary the mean
matrix (heatmap image, rows = perturbation steps) and per-p curves as TensorBoard scalars.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cosjax.analysis.cka import linear_cka
from cosjax.analysis.images import heatmap, upscale
from cosjax.models.dit import patchify
from cosjax.transforms import capture, noise_at_step, trace_x0
from experiments import common

NAME = "information-flow"


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    perturb_steps: the early steps to perturb (None = the first half of the steps).
    representation: "x0" or "hidden:K" (block K's output).
    """

    cases: int | None = 4
    perturb_steps: tuple[int, ...] | None = None
    representation: str = "x0"

    def validate(self, subject, settings) -> None:
        super().validate(subject, settings)
        common.check_indices(
            "perturb_steps", self.perturb_steps, settings.steps, "steps", "the first half of the steps"
        )
        layers = subject.num_layers
        valid = f"'x0' or 'hidden:K' with K in 0..{layers - 1} (the model has {layers} layers)"
        try:
            layer = _layer(self.representation)
        except ValueError:
            raise common.setting_error(
                "representation", self.representation, valid, "representation=x0"
            ) from None
        if layer is not None and not layer < layers:
            raise common.setting_error(
                "representation", self.representation, valid, f"representation=hidden:{layers - 1}"
            )


def _layer(representation: str) -> int | None:
    if not isinstance(representation, str):
        raise ValueError(f"representation must be 'x0' or 'hidden:K', got {representation!r}")
    if representation == "x0":
        return None
    kind, _, layer = representation.partition(":")
    if kind != "hidden" or not layer.isdigit():
        raise ValueError(f"representation must be 'x0' or 'hidden:K', got {representation!r}")
    return int(layer)


def run(config: Config = Config(), model=None, out=None, progress=True, stop_after=None) -> dict:
    setup = common.prepare(NAME, config, model, out)
    steps = setup.settings.steps
    perturb = list(range(max(1, steps // 2))) if config.perturb_steps is None else list(config.perturb_steps)
    layer = _layer(config.representation)
    base = setup.sampler()
    patch = setup.subject.config.patch_size
    traced = trace_x0(base) if layer is None else capture(base, [layer], list(range(steps)), "hidden")

    def features(result, batch: int) -> jax.Array:
        """[S, B, tokens, features] of a traced result."""
        if layer is None:
            x0 = result.trace.x0  # [S, B, C, T, H, W]
            return jax.vmap(lambda x: patchify(x, patch))(x0)
        return result.trace.hidden[:, 0, :batch]  # conditional branch: first B rows

    def clean_features(cond, key):
        return features(traced(cond, key), cond.latent_shape[0])

    def dissimilarity(cond, key, p, clean):
        moved = features(noise_at_step(traced, p)(cond, key), cond.latent_shape[0])
        return 1.0 - jax.vmap(jax.vmap(linear_cka))(clean, moved)  # [S, B]

    run_clean, run_p = jax.jit(clean_features), jax.jit(dissimilarity)

    def compute(ids):
        cases = [setup.by_id[i] for i in ids]
        cond, key = common.condition(setup, cases), common.batch_key(setup, cases)
        clean = run_clean(cond, key)  # [S, B, tokens, features], shared by every p
        d = np.stack([np.asarray(run_p(cond, key, jnp.int32(p), clean)) for p in perturb])  # [P, S, B]
        return [
            {**common.case_fields(case), "perturb_steps": perturb, "dissimilarity": d[:, :, b].tolist()}
            for b, case in enumerate(cases)
        ]

    return common.run_and_finish(setup, compute, lambda: finish(setup, perturb), progress, stop_after)


def finish(setup, perturb: list[int]) -> dict:
    rows = setup.folder.records(c.id for c in setup.cases)
    matrix = np.mean([r["dissimilarity"] for r in rows], axis=0)  # [P, S]
    for pi, p in enumerate(perturb):
        for s, value in enumerate(matrix[pi]):
            setup.writer.scalar(f"dissimilarity/perturb_step{p:03d}", float(value), s)
    setup.writer.image("dissimilarity/mean_matrix", upscale(heatmap(matrix, lo=0.0, hi=1.0), 8), 0)
    summary = {
        "perturb_steps": perturb,
        "mean_dissimilarity": matrix.tolist(),
        "final_dissimilarity": {str(p): float(matrix[pi, -1]) for pi, p in enumerate(perturb)},
        "table": common.markdown_table(
            ["perturbed at", "at next step", "at the last step"],
            [
                [p, float(matrix[pi, min(p + 1, matrix.shape[1] - 1)]), float(matrix[pi, -1])]
                for pi, p in enumerate(perturb)
            ],
        ),
    }
    setup.writer.text("summary", summary["table"])
    setup.writer.close()
    setup.folder.write_results(summary, rows)
    return summary

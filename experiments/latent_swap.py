"""Latent swap (Fig. 6): which layer's hidden states carry the decision?

    cosjax run latent-swap                                 # embedded model, move family
    cosjax run latent-swap --data toy:move cases=32 swap_steps=0,1,2,3,4
    cosjax run latent-swap --model ckpt/vbvr-wan2.2 --data vbvr-bench:VBVR-Bench-Data \\
        cases=1 layers=0,10,20,30,39

Each case A is paired with an alternative input B (`subject.alternative`: for the toy `move`
family, the same scene with the other rule's prompt, so A and B ask for different target cells;
otherwise the next case of the same task). B is run clean with its hidden states captured after
every block at `swap_steps`; then, for each layer k, A is run with block k's output at those
steps replaced by B's (`cosjax.swap_layer`, both CFG branches; the swap at step s uses B's state
at step s of B's own trajectory). Both runs start from the same initial noise.

Protocol choices (the paper leaves them open): the swap replaces *all* tokens of layer k at the
swap steps (default: every step; on the shipped toy one block swapped at a few early steps flips
nothing, because the answer is re-derived from the input at every step); the direction is
alternative -> case.
Outcome: a case "flips" at layer k when what the swapped video draws (its last frame minus its
first frame) is closer (mean absolute pixel difference) to what B's clean video draws than to what
A's does. The change from the first frame, not the last frame itself: the swapped run keeps A's
first frame (I2V), so where B's input differs from A's (a different maze for the toy's maze
families), raw last frames would always stay nearer A's scene whatever the swap did to the answer.
Cases whose clean A and B draw the same change (nothing to flip to) are left out and counted.
Where the subject has a scorer, "adopts" = the swapped video solves B's task (score >= `success`)
as well. Figure `plots/flip_vs_layer.png` (and TensorBoard `plots/flip_vs_layer`): flip and adopt
share per layer when the whole window `swap_steps` is swapped. With `per_step=true` every
(layer, step) of the window is also swapped alone (one more run per pair, the layer and step
traced: one compilation), giving `flip_share_per_step` [layers, steps] and the heatmap
`plots/flip_layer_x_step.png`: at which step which layer still decides the answer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cosjax.analysis import plots
from cosjax.transforms import capture, swap_layer
from experiments import common

NAME = "latent-swap"


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    layers: the layers k to swap (None = all).
    swap_steps: the steps whose layer-k output is swapped (None = every step).
    success: score threshold for "adopts".
    per_step: also swap every (layer, step) of the window alone: the layer x step flip heatmap.
    """

    data: str = "toy:move"
    layers: tuple[int, ...] | None = None
    swap_steps: tuple[int, ...] | None = None
    success: float = 0.5
    per_step: bool = False

    def validate(self, subject, settings) -> None:
        super().validate(subject, settings)
        common.check_indices("layers", self.layers, subject.num_layers, "layers", "every layer")
        common.check_indices("swap_steps", self.swap_steps, settings.steps, "steps", "every step")
        common.check_number("success", self.success, 0.0, 1.0, optional=False)


def run(config: Config = Config(), model=None, out=None, progress=True, stop_after=None) -> dict:
    setup = common.prepare(NAME, config, model, out)
    steps = setup.settings.steps
    num_layers = setup.subject.num_layers
    layers = list(range(num_layers)) if config.layers is None else list(config.layers)
    swap_steps = list(range(steps)) if config.swap_steps is None else list(config.swap_steps)
    base = setup.sampler()
    clean_capture = jax.jit(capture(base, layers, swap_steps, what="hidden"))
    clean = jax.jit(base)

    def swapped(cond, key, layer, source):
        return swap_layer(base, layer, swap_steps, source)(cond, key)

    run_swap = jax.jit(swapped)

    def swapped_at(cond, key, layer, step, source):
        return swap_layer(base, layer, step, source)(cond, key)

    run_swap_at = jax.jit(swapped_at)  # layer and step traced: one compilation for every pair

    def compute(ids):
        cases = [setup.by_id[i] for i in ids]
        alts = [setup.subject.alternative(c) for c in cases]
        cond_a = common.condition(setup, cases)
        # B starts from A's initial noise: the only difference between the runs is the input.
        cond_b = setup.subject.condition(alts, setup.settings).replace(noise=cond_a.noise)
        key = common.batch_key(setup, cases)
        video_a = setup.subject.decode(clean(cond_a, key).latents, cases)
        result_b = clean_capture(cond_b, key)
        video_b = setup.subject.decode(result_b.latents, alts)
        hidden_b = result_b.trace.hidden  # [S_swap, K, 2B, L, D]
        per_layer = []
        for ki, layer in enumerate(layers):
            out = run_swap(cond_a, key, jnp.int32(layer), hidden_b[:, ki])
            per_layer.append(setup.subject.decode(out.latents, cases))

        def alone(ki, j):  # videos with layer ki swapped at swap_steps[j] only
            layer, step = jnp.int32(layers[ki]), jnp.int32(swap_steps[j])
            return setup.subject.decode(run_swap_at(cond_a, key, layer, step, hidden_b[j, ki]).latents, cases)

        pairs = [[(ki, j) for j in range(len(swap_steps))] for ki in range(len(layers))]
        per_pair = [[alone(*pair) for pair in row] for row in pairs] if config.per_step else []
        records = []
        for b, (case, alt) in enumerate(zip(cases, alts, strict=True)):
            drawn_a, drawn_b = _drawn(video_a[b]), _drawn(video_b[b])
            distinct = bool(np.abs(drawn_a - drawn_b).mean() > 0)
            flips, adopts, to_a, to_b = [], [], [], []
            for videos in per_layer:
                drawn = _drawn(videos[b])
                da, db = float(np.abs(drawn - drawn_a).mean()), float(np.abs(drawn - drawn_b).mean())
                to_a.append(da)
                to_b.append(db)
                flips.append(distinct and db < da)
                s = setup.subject.score(alt, videos[b])
                adopts.append(None if s is None else s >= config.success)
            extra = {}
            if config.per_step:
                closer = [
                    [_closer_to(_drawn(videos[b]), drawn_b, drawn_a) for videos in row] for row in per_pair
                ]
                extra["flipped_per_step"] = [[distinct and c for c in row] for row in closer]
            records.append(
                {
                    **common.case_fields(case),
                    "alternative": alt.id,
                    "layers": layers,
                    "distinct": distinct,
                    "clean_score": setup.subject.score(case, video_a[b]),
                    "alternative_score": setup.subject.score(alt, video_b[b]),
                    "flipped": flips,
                    "adopted": adopts,
                    "distance_to_case": to_a,
                    "distance_to_alternative": to_b,
                    **extra,
                }
            )
        return records

    return common.run_and_finish(
        setup, compute, lambda: finish(setup, layers, swap_steps, config.per_step), progress, stop_after
    )


def _drawn(video) -> np.ndarray:
    """float32 [H, W, 3]: what a uint8 video [F, H, W, 3] draws, its last frame minus its first."""
    return video[-1].astype(np.float32) - video[0].astype(np.float32)


def _closer_to(drawn, target, other) -> bool:
    """Whether `drawn` is nearer (mean |difference|) to `target` than to `other` (all float32 [H, W, 3])."""
    return bool(np.abs(drawn - target).mean() < np.abs(drawn - other).mean())


def finish(setup, layers: list[int], swap_steps: list[int], per_step: bool = False) -> dict:
    rows = setup.folder.records(c.id for c in setup.cases)
    usable = [r for r in rows if r["distinct"]]
    flip_share = [
        float(np.mean([r["flipped"][k] for r in usable])) if usable else None for k in range(len(layers))
    ]
    adopted = [[r["adopted"][k] for r in usable if r["adopted"][k] is not None] for k in range(len(layers))]
    adopt_share = [float(np.mean(a)) if a else None for a in adopted]
    for k, layer in enumerate(layers):
        if flip_share[k] is not None:
            setup.writer.scalar("flip_share", flip_share[k], layer)
        if adopt_share[k] is not None:
            setup.writer.scalar("adopt_share", adopt_share[k], layer)
    summary = {
        "layers": layers,
        "cases": len(rows),
        "cases_without_distinct_outcomes": len(rows) - len(usable),
        "flip_share": flip_share,
        "adopt_share": adopt_share,
        "table": common.markdown_table(
            ["layer", "flip share", "adopt share"],
            [[layer, flip_share[k], adopt_share[k]] for k, layer in enumerate(layers)],
        ),
    }
    fig = plots.curves_figure(
        layers,
        {"flip share": flip_share, "adopt share": adopt_share},
        "swapped layer",
        "share of cases",
        f"Latent swap at steps {', '.join(map(str, swap_steps))}: which layer carries the decision",
        (0, 1.05),
    )
    caption = (
        "Share of cases whose output flips to the alternative's answer (and solves its task) when one "
        "layer's hidden states are swapped in at the swap steps."
    )
    summary["figures"] = [common.save_figure(setup, "flip_vs_layer", fig, caption)]
    if per_step:  # None where no case has distinct outcomes
        shares = np.full((len(layers), len(swap_steps)), np.nan)
        if usable:
            shares = np.mean([r["flipped_per_step"] for r in usable], axis=0)  # [K, S]
        summary["flip_share_per_step"] = [[None if np.isnan(v) else float(v) for v in row] for row in shares]
        summary["swap_steps"] = swap_steps
        fig = plots.heatmap_figure(
            shares,
            [f"layer {k}" for k in layers],
            [str(s) for s in swap_steps],
            "denoising step swapped",
            "block swapped",
            "Latent swap of one layer at one step: share of cases that flip",
            "flip share",
        )
        caption = (
            "Share of cases whose output flips to the alternative's when one block's hidden states are "
            "swapped in at one step alone (rows: block, columns: step)."
        )
        summary["figures"].append(common.save_figure(setup, "flip_layer_x_step", fig, caption))
    setup.writer.text("summary", summary["table"])
    setup.writer.close()
    setup.folder.write_results(summary, rows)
    return summary

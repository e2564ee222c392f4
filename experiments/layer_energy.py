"""Layer energy (Fig. 6): per-token L2 energy of every block's output, per layer x latent frame.

    cosjax run layer-energy                                # embedded model, 4 cases per toy family
    cosjax run layer-energy --data toy:maze energy_steps=0,5,10,19
    cosjax run layer-energy --model ckpt/vbvr-wan2.2 --data vbvr-bench:VBVR-Bench-Data \\
        cases=1 layers=0,10,20,30,39

Energy of a token = the L2 norm over channels of the residual stream after block l (conditional
CFG branch, as the paper's hook keeps the first call), captured with `cosjax.capture(what="energy")`
at `energy_steps` (None = 4 evenly spaced steps, first and last included) for `layers` (None =
every layer). Per case and step it writes a heatmap grid (rows = layers, columns = latent frames,
each panel scaled to its own min-max as the paper's tool does, viridis) and logs it to TensorBoard.
Tables: mean token energy per layer and step (over cases), and per layer x latent frame
(`cosjax.analysis.mean_energy`, `frame_mean_energy`: means over tokens, not the paper tool's
L2 "temporal energy" `frame_energy`). Figures in `plots/` (and TensorBoard `plots/*`), with colour
bars: mean energy per layer x step, and per layer x latent frame at each recorded step.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cosjax.analysis import plots
from cosjax.analysis.energy import frame_mean_energy, mean_energy, to_grid, token_grid
from cosjax.analysis.images import grid, heatmap, upscale
from cosjax.transforms import capture
from experiments import common

NAME = "layer-energy"


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    layers: blocks to record (None = all).
    energy_steps: steps to record (None = 4 evenly spaced).
    panel_scale: pixel magnification of one token in the heatmaps.
    """

    cases: int | None = 4
    layers: tuple[int, ...] | None = None
    energy_steps: tuple[int, ...] | None = None
    panel_scale: int = 8

    def validate(self, subject, settings) -> None:
        super().validate(subject, settings)
        common.check_indices("layers", self.layers, subject.num_layers, "layers", "every layer")
        common.check_indices(
            "energy_steps", self.energy_steps, settings.steps, "steps", "4 evenly spaced steps"
        )
        common.check_int("panel_scale", self.panel_scale, 1, 64)


def chosen_steps(config: Config, steps: int) -> list[int]:
    if config.energy_steps is not None:
        return list(config.energy_steps)
    return sorted({round(i * (steps - 1) / 3) for i in range(4)})


def run(config: Config = Config(), model=None, out=None, progress=True, stop_after=None) -> dict:
    setup = common.prepare(NAME, config, model, out)
    layers = list(range(setup.subject.num_layers)) if config.layers is None else list(config.layers)
    steps = chosen_steps(config, setup.settings.steps)
    sample = jax.jit(capture(setup.sampler(), layers, steps, what="energy"))
    index = {c.id: i for i, c in enumerate(setup.cases)}

    def compute(ids):
        cases = [setup.by_id[i] for i in ids]
        cond = common.condition(setup, cases)
        tokens = token_grid(cond.latent_shape, setup.subject.config.patch_size)  # (f, h, w)
        energy = np.asarray(sample(cond, common.batch_key(setup, cases)).trace.energy)  # [S, K, B, L]
        means = np.asarray(mean_energy(energy))  # [S, K, B]
        frame_means = np.asarray(frame_mean_energy(energy, tokens))  # [S, K, B, f]
        energy = np.asarray(to_grid(energy, tokens))  # [S, K, B, f, h, w]
        records = []
        for b, case in enumerate(cases):
            for si, step in enumerate(steps):
                tiles = heatmap(energy[si, :, b])  # [K, f, h, w, 3], each panel its own min-max
                image = grid(upscale(tiles, config.panel_scale))
                common.save_png(setup, case.id, f"energy_step{step:03d}.png", image)
                setup.writer.image(f"energy/{case.id}/step{step:03d}", image, index[case.id])
            records.append(
                {
                    **common.case_fields(case),
                    "layers": layers,
                    "steps": steps,
                    # [S, K]: mean token energy; [S, K, f]: mean per latent frame
                    "mean_energy": means[:, :, b].tolist(),
                    "frame_mean_energy": frame_means[:, :, b].tolist(),
                }
            )
        return records

    return common.run_and_finish(setup, compute, lambda: finish(setup, layers, steps), progress, stop_after)


def finish(setup, layers: list[int], steps: list[int]) -> dict:
    rows = setup.folder.records(c.id for c in setup.cases)
    mean_energy = np.mean([r["mean_energy"] for r in rows], axis=0)  # [S, K]
    frame_means = np.mean([r["frame_mean_energy"] for r in rows], axis=0)  # [S, K, f]
    for si, step in enumerate(steps):
        for ki, layer in enumerate(layers):
            setup.writer.scalar(f"mean_energy/step{step:03d}", float(mean_energy[si, ki]), layer)
        setup.writer.image(
            f"mean_energy_layer_x_frame/step{step:03d}", upscale(heatmap(frame_means[si]), 8), 0
        )
    summary = {
        "layers": layers,
        "steps": steps,
        "mean_energy": mean_energy.tolist(),
        "frame_mean_energy": frame_means.tolist(),
        "table": common.markdown_table(
            ["layer", *[f"step {s}" for s in steps]],
            [
                [layer, *[float(mean_energy[si, ki]) for si in range(len(steps))]]
                for ki, layer in enumerate(layers)
            ],
        ),
    }
    summary["figures"] = figures(setup, layers, steps, mean_energy, frame_means)
    setup.writer.text("summary", summary["table"])
    setup.writer.close()
    for r in rows:
        r.pop("frame_mean_energy")
    setup.folder.write_results(summary, rows)
    return summary


def figures(setup, layers, steps, mean_energy: np.ndarray, frame_means: np.ndarray) -> list[dict]:
    """Heatmaps with colour bars: mean_energy [S, K] as layer x step, frame_means [S, K, f] as
    layer x latent frame per step; [{file, caption}]."""
    rows = [f"layer {k}" for k in layers]
    fig = plots.heatmap_figure(
        mean_energy.T,
        rows,
        [str(s) for s in steps],
        "denoising step",
        "block",
        "Mean token energy per layer and step",
        "mean L2 norm of the block's output",
    )
    caption = "Mean token energy (L2 norm of the residual stream) after each block at each recorded step."
    out = [common.save_figure(setup, "energy_layer_x_step", fig, caption)]
    frames = [str(f) for f in range(frame_means.shape[-1])]
    for si, step in enumerate(steps):
        title = f"Mean token energy per layer and latent frame, step {step}"
        fig = plots.heatmap_figure(
            frame_means[si], rows, frames, "latent frame", "block", title, "mean L2 norm"
        )
        caption = f"Mean token energy after each block per latent frame at step {step}."
        out.append(common.save_figure(setup, f"energy_layer_x_frame_step{step:03d}", fig, caption))
    return out

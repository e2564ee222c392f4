"""The quick start: the embedded model solving toy tasks, traced step by step, probed and ensembled.

    cosjax demo                       # ./demo.sh; a few minutes on 2 CPU cores
    cosjax demo --out runs/demo --cases 4
    tensorboard --logdir runs/demo

Runs three experiments on the embedded model (`cosjax/assets/toy`), each into its own folder under
`--out` (each resumable, see `cosjax.runs`), then prints one results table:
  1. trajectory: one case per task family, x0-hat decoded at every step -> step x frame grids,
     GIFs, and the x0-hat score per step (when does the model commit to its answer?);
  2. noise-perturbation: noise at each step vs noise at each frame on the `move` family;
  3. ensemble: the training-free ensemble (3 seeds) against the plain sampler on every family,
     in-domain and held-out.
"""

from __future__ import annotations

import time

from cosjax.paths import user_path
from experiments import common, ensemble, noise_perturbation, trajectory


def run_demo(out: str = "runs/demo", cases: int = 4, model: str | None = None, progress: bool = True) -> dict:
    """Runs the demo and returns {experiment: summary}."""
    out_dir = user_path(out)
    t0 = time.perf_counter()
    results = {}
    print("1/3 trajectory: x0-hat at every denoising step, one case per family")
    results["trajectory"] = trajectory.run(
        trajectory.Config(cases=1), model=model, out=out_dir / "trajectory", progress=progress
    )
    print("2/3 noise-perturbation: noise at each step vs at each frame (move family)")
    results["noise-perturbation"] = noise_perturbation.run(
        noise_perturbation.Config(data="toy:move", cases=cases),
        model=model,
        out=out_dir / "noise-perturbation",
        progress=progress,
    )
    print("3/3 ensemble: 3 merged seeds vs the plain sampler, every family, in-domain and held-out")
    results["ensemble"] = ensemble.run(
        ensemble.Config(cases=cases), model=model, out=out_dir / "ensemble", progress=progress
    )
    print(report(results))
    print(
        f"\ndone in {time.perf_counter() - t0:.0f} s; outputs in {out_dir}/; tensorboard --logdir {out_dir}"
    )
    return results


def report(results: dict) -> str:
    """The demo's results as markdown."""
    traj = results["trajectory"]
    steps = sorted(traj["x0_score_by_step"], key=int)
    lines = ["\n## When does the answer appear? (x0-hat score per denoising step, all families)"]
    lines.append(
        common.markdown_table(
            ["step", *[str(s) for s in steps]],
            [["score", *[traj["x0_score_by_step"][s]["overall"] for s in steps]]],
        )
    )
    noise = results["noise-perturbation"]["by_split"]["overall"]
    clean = results["noise-perturbation"]["clean_score"]["overall"]
    lines.append(f"\n## Noise at a step vs at a frame (move family; clean score {clean:.3f})")
    lines.append(
        common.markdown_table(
            ["noise at", *[str(i) for i in range(max(len(noise["drop_step"]), len(noise["drop_frame"])))]],
            [["step: score drop", *noise["drop_step"]], ["frame: score drop", *noise["drop_frame"]]],
        )
    )
    lines.append("\n## Ensemble vs plain sampler (solved share, score >= 0.5)")
    lines.append(results["ensemble"]["table"])
    return "\n".join(lines)

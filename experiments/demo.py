"""The quick start: the embedded model solving toy tasks, traced step by step, probed and ensembled.

    cosjax demo                       # ./demo.sh; a few minutes on 2 CPU cores
    cosjax demo --out runs/demo --cases 4
    tensorboard --logdir runs/demo

Runs four experiments on the embedded model (`cosjax/assets/toy`), each into its own folder under
`--out` (each resumable, see `cosjax.runs`), then prints one results table and gathers every figure
on one page, `OUT/index.html` (`experiments.demo_page`):
  1. trajectory: one case per task family (the issue-14 families `maze_routes`, several valid
     answers, and `maze_long`, long paths, included), x0-hat decoded at every step -> labelled
     step x frame grids, GIFs, the x0-hat score and solved share per step (when does the model
     commit to its answer?) and, on multi-answer cases, the valid answers present per step;
  2. noise-perturbation: noise at each step vs noise at each frame on the `maze_long` family (the
     path grows over the frames, and the answer over the steps);
  3. latent-swap: one block's hidden states swapped in from the alternative case (`move`: the same
     scene under the other rule) at every step, and at each step alone -> flip share per block and
     the block x step flip heatmap;
  4. ensemble: the training-free ensemble (3 seeds) against the plain sampler on every family,
     in-domain and held-out.
"""

from __future__ import annotations

import time

from cosjax.data.tasks import FAMILIES
from cosjax.paths import user_path
from experiments import common, ensemble, latent_swap, noise_perturbation, trajectory
from experiments.demo_page import write_page

TRAJECTORY_DATA = "toy:" + ",".join(FAMILIES)
NOISE_DATA = "toy:maze_long"


def run_demo(out: str = "runs/demo", cases: int = 4, model: str | None = None, progress: bool = True) -> dict:
    """Runs the demo and returns {experiment: summary}."""
    out_dir = user_path(out)
    t0 = time.perf_counter()
    results = {}
    print("1/4 trajectory: x0-hat at every denoising step, one case per family")
    results["trajectory"] = trajectory.run(
        trajectory.Config(data=TRAJECTORY_DATA, cases=1),
        model=model,
        out=out_dir / "trajectory",
        progress=progress,
    )
    print("2/4 noise-perturbation: noise at each step vs at each frame (maze_long family)")
    results["noise-perturbation"] = noise_perturbation.run(
        noise_perturbation.Config(data=NOISE_DATA, cases=cases),
        model=model,
        out=out_dir / "noise-perturbation",
        progress=progress,
    )
    print("3/4 latent-swap: one block swapped in from the other rule's run, at all steps and each alone")
    results["latent-swap"] = latent_swap.run(
        latent_swap.Config(data="toy:move", cases=cases, per_step=True),
        model=model,
        out=out_dir / "latent-swap",
        progress=progress,
    )
    print("4/4 ensemble: 3 merged seeds vs the plain sampler, every family, in-domain and held-out")
    results["ensemble"] = ensemble.run(
        ensemble.Config(cases=cases), model=model, out=out_dir / "ensemble", progress=progress
    )
    text = report(results)
    print(text)
    page = write_page(out_dir, {name: r.get("figures", []) for name, r in results.items()}, text)
    print(
        f"\ndone in {time.perf_counter() - t0:.0f} s; outputs in {out_dir}/; figures on {page}; "
        f"tensorboard --logdir {out_dir}"
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
            [
                ["score", *[traj["x0_score_by_step"][s]["overall"] for s in steps]],
                ["solved", *traj["solved_by_step"]["overall"]],
            ],
        )
    )
    multi = traj["candidates"]["overall"]
    if multi["cases"]:
        lines.append(
            f"\n## Several answers at once? (valid answers in the x0-hat per step, {multi['cases']} "
            f"multi-answer cases; present = every distinguishing cell inked >= the threshold)"
        )
        rows = [[f"candidates @ {t}", *curve] for t, curve in multi["sweep"].items()]
        rows.append([f"share >= 2 @ {multi['threshold']:g}", *multi["two_or_more_by_step"]])
        lines.append(common.markdown_table(["step", *[str(s) for s in steps]], rows))
        commit = multi["commit_step"]
        lines.append(
            f"final videos holding exactly one answer: {multi['final_exactly_one']:.3f}; commit step "
            f"(first step solved with the final answer for good; {len(steps)} = never): median "
            f"{commit['median']:g}, at step 0 {commit['at_step_0']:.3f}, never {commit['never']}"
        )
    noise = results["noise-perturbation"]["by_split"]["overall"]
    clean = results["noise-perturbation"]["clean_score"]["overall"]
    family = NOISE_DATA.partition(":")[2]
    lines.append(f"\n## Noise at a step vs at a frame ({family} family; clean score {clean:.3f})")
    lines.append(
        common.markdown_table(
            ["noise at", *[str(i) for i in range(max(len(noise["drop_step"]), len(noise["drop_frame"])))]],
            [["step: score drop", *noise["drop_step"]], ["frame: score drop", *noise["drop_frame"]]],
        )
    )
    if noise["drop_frame_scored"] is not None:
        lines.append(
            f"the scorer reads latent frame {noise['scored_frame']}: drop there "
            f"{_number(noise['drop_frame_scored'])}; mean drop over the other frames "
            f"{_number(noise['drop_frame_other'])}; mean drop over the steps "
            f"{_number(noise['drop_step_mean'])}"
        )
    swap = results["latent-swap"]
    if "flip_share_per_step" in swap:
        lines.append(
            "\n## Which block at which step decides? (latent swap of one block, move family: share of "
            "cases whose answer flips to the other rule's; the block swapped at every step, or at one alone)"
        )
        lines.append(
            common.markdown_table(
                ["block \\ swapped at", "every step", *[f"step {s}" for s in swap["swap_steps"]]],
                [
                    [f"layer {k}", whole, *row]
                    for k, whole, row in zip(
                        swap["layers"], swap["flip_share"], swap["flip_share_per_step"], strict=True
                    )
                ],
            )
        )
    lines.append("\n## Ensemble vs plain sampler (solved share, score >= 0.5)")
    lines.append(results["ensemble"]["table"])
    if "gain_table" in results["ensemble"]:
        lines.append("\nEnsemble gain (ensemble - plain) with its 95% paired bootstrap interval over cases")
        lines.append(results["ensemble"]["gain_table"])
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

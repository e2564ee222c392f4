"""A stand-in for VBVR-EvalKit's run_evaluation.py: same command line, folder layout and results JSON.

Written for the tests (no OpenCV): the "task-specific score" of a video is
1 - |mean(last frame) - mean(GT final_frame.png)| / 255, so a video ending on the GT final frame
scores about 1. Tasks not in TASKS are skipped with a warning, as the real script skips task folders
missing from its evaluator map; an unreadable video scores 0.0 with an `error`, as in the real one.
"""

import argparse
import json
import os
import re
import sys
from datetime import datetime

import imageio.v2 as imageio
import numpy as np

TASKS = {
    "G-3_stable_sort_data-generator": "Perception",
    "O-10_shape_outline_fill_data-generator": "Abstraction",
    "O-39_maze_data-generator": "Spatiality",
}
FOLDERS = {"In-Domain_50": "In_Domain", "Out-of-Domain_50": "Out_of_Domain"}


def score_video(video_path, gt_final):
    last = np.asarray(imageio.mimread(video_path, memtest=False)[-1], np.float64)
    if gt_final is None:
        return last.mean() / 255.0
    target = np.asarray(imageio.imread(gt_final), np.float64)[..., :3]
    return float(1.0 - abs(last.mean() - target.mean()) / 255.0)


def evaluate_model(name, model_path, gt_base, output_dir):
    samples = []
    for folder, split in FOLDERS.items():
        folder_path = os.path.join(model_path, folder)
        if not os.path.isdir(folder_path):
            print(f"Warning: {folder_path} does not exist")
            continue
        for task in sorted(os.listdir(folder_path)):
            if task not in TASKS:
                print(f"Warning: No evaluator for task {task}")
                continue
            for video_file in sorted(os.listdir(os.path.join(folder_path, task))):
                if not re.fullmatch(r"\d{5}\.mp4", video_file):
                    continue
                video_path = os.path.join(folder_path, task, video_file)
                gt_final = os.path.join(gt_base, folder, task, video_file[:5], "final_frame.png")
                try:
                    score, error = (
                        score_video(video_path, gt_final if os.path.exists(gt_final) else None),
                        None,
                    )
                except Exception as e:  # noqa: BLE001 - the real script also scores failures 0
                    score, error = 0.0, str(e)
                samples.append(
                    dict(
                        video_path=video_path,
                        video_file=video_file,
                        task_name=task,
                        split=split,
                        category=TASKS[task],
                        folder=folder,
                        score=score,
                        dimensions={},
                        error=error,
                    )
                )
    if not samples:
        print(f"No videos found in {model_path}")
        return None
    summary = {}
    for group in ("In_Domain", "Out_of_Domain", "overall"):
        chosen = [s for s in samples if group in ("overall", s["split"])]
        by_task, by_cat = {}, {}
        for s in chosen:
            by_task.setdefault(s["task_name"], []).append(s["score"])
            by_cat.setdefault(s["category"], []).append(s["score"])
        scores = [s["score"] for s in chosen]
        summary[group] = {
            "scores": scores,
            "by_task": {k: float(np.mean(v)) for k, v in by_task.items()},
            "by_category": {k: float(np.mean(v)) for k, v in by_cat.items()},
            "mean_score": float(np.mean(scores)) if scores else 0.0,
            "num_samples": len(scores),
        }
    results = dict(
        model_name=name,
        model_path=model_path,
        timestamp=datetime.now().isoformat(),
        samples=samples,
        summary=summary,
    )
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{name}_vbvr_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def main():
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model_path", type=str)
    group.add_argument("--models_base", type=str)
    parser.add_argument("--models", type=str, nargs="+", default=None)
    parser.add_argument("--gt_base", type=str, required=True)
    parser.add_argument("--output_dir", type=str, default=None)
    parser.add_argument("--device", type=str, default="cuda")
    args = parser.parse_args()
    if args.model_path:
        entries = [(os.path.basename(args.model_path.rstrip("/")), args.model_path)]
    else:
        names = sorted(d for d in os.listdir(args.models_base) if not args.models or d in args.models)
        entries = [(d, os.path.join(args.models_base, d)) for d in names]
    here = os.path.dirname(os.path.abspath(__file__))
    base = (args.model_path or args.models_base).rstrip("/")
    output_dir = args.output_dir or os.path.join(here, "evaluation_results", os.path.basename(base))
    summaries = {}
    for name, path in entries:
        results = evaluate_model(name, path, args.gt_base, output_dir)
        if results:
            s = results["summary"]
            summaries[name] = {k: s[k]["mean_score"] for k in ("In_Domain", "Out_of_Domain", "overall")}
    if summaries:
        with open(os.path.join(output_dir, "all_models_summary.json"), "w") as f:
            json.dump(summaries, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

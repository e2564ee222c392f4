"""The `cosjax` command line: `cosjax convert`, `cosjax run NAME`, `cosjax score`, `cosjax train-toy`,
`cosjax demo`.

Exit status: 0 done; 2 bad input (the message names the setting and the fix); 3 the EvalKit's
scoring failed after every video and record was written (`cosjax score` retries it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# `--lora NAME=PATH`: NAME -> the expert the LoRA is merged into
LORA_EXPERTS = {
    "high": "high_noise",
    "high_noise": "high_noise",
    "low": "low_noise",
    "low_noise": "low_noise",
    "dit": "dit",
}


def _lora_arg(value: str) -> tuple[str, str]:
    """'high=PATH' -> ('high_noise', 'PATH'); a bad value becomes an argparse usage error (exit 2)."""
    name, sep, path = value.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected EXPERT=PATH, got {value!r}")
    if name not in LORA_EXPERTS:
        raise argparse.ArgumentTypeError(
            f"unknown expert {name!r} in {value!r}; use high=PATH and/or low=PATH (A14B) or dit=PATH"
        )
    return LORA_EXPERTS[name], path


def _convert(args: argparse.Namespace) -> int:
    from cosjax.configs import get_preset
    from cosjax.weights.convert import convert_checkpoint

    config = get_preset(args.preset).dit if args.preset else None
    loras: dict[str, list[tuple[str, float]]] = {}
    for expert, path in args.lora:
        loras.setdefault(expert, []).append((path, args.lora_strength))
    out = convert_checkpoint(
        args.src,
        args.dst,
        dtype=args.dtype,
        config=config,
        overwrite=args.overwrite,
        progress=not args.quiet,
        loras=loras,
        vae=not args.no_vae,
        text_encoder=not args.no_text_encoder,
        allow_nonfinite=args.allow_nonfinite,
    )
    print(f"wrote {out}")
    for line in _summary(json.loads((out / "cosjax_dit.json").read_text())):
        print(f"  {line}")
    return 0


def _summary(meta: dict) -> list[str]:
    """One line per converted part (DiT experts, components) and per skipped component."""
    lines = [f"dit: {', '.join(meta['experts'])} ({meta['dtype']}, {meta['source']['layout']} layout)"]
    for name, info in meta.get("components", {}).items():
        if name == "tokenizer":
            lines.append(f"tokenizer: {', '.join(info['files'])} from {info['path']}")
        else:
            lines.append(f"{name}: {info['dtype']}, from {info['path']} ({info['layout']} layout)")
    for name, why in meta.get("skipped_components", {}).items():
        lines.append(f"{name}: skipped ({why})")
    return lines


def _demo(args: argparse.Namespace) -> int:
    from experiments.demo import run_demo

    run_demo(out=args.out, cases=args.cases, model=args.model, progress=not args.quiet)
    return 0


def _run(args: argparse.Namespace) -> int:
    import experiments
    from cosjax.paths import user_path
    from experiments.common import parse_overrides, using_mesh

    module = experiments.get(args.name)
    values = parse_overrides(module.Config, args.overrides)
    if args.data is not None:
        values["data"] = args.data
    config = module.Config(**values)
    with using_mesh(args.mesh):
        summary = module.run(config, model=args.model, out=args.out, progress=not args.quiet)
    out = user_path(args.out or f"runs/{args.name}")
    print(summary.get("table", ""))
    print(f"results: {out}/results.json; TensorBoard: tensorboard --logdir {out}/tb")
    return 0


def _score(args: argparse.Namespace) -> int:
    from experiments.ensemble import score

    summary = score(args.run_dir, evalkit=args.evalkit, python=args.python, bench=args.bench)
    print(summary.get("table", ""))
    print(f"results: {args.run_dir}/results.json; TensorBoard: tensorboard --logdir {args.run_dir}/tb")
    return 0


def _train_toy(args: argparse.Namespace) -> int:
    from experiments.common import parse_overrides
    from experiments.train_toy import Recipe, main

    recipe = Recipe(**parse_overrides(Recipe, args.overrides))
    out = main(recipe, args.workdir, args.export, progress=not args.quiet)
    print(json.dumps(out, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from experiments import EXPERIMENTS  # the experiment registry: its names are `cosjax run`'s choices

    parser = argparse.ArgumentParser(prog="cosjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    conv = sub.add_parser(
        "convert",
        help="convert a PyTorch Wan DiT checkpoint or a whole repo (DiT, VAE, text encoder) to Orbax",
    )
    conv.add_argument("src", help="Diffusers repo, official Wan repo/model folder, or .safetensors file")
    conv.add_argument("dst", help="output folder (created atomically)")
    conv.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    conv.add_argument("--preset", help="take the architecture from this preset instead of config.json")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    conv.add_argument("--quiet", action="store_true", help="no progress bar")
    conv.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="keep tensors holding NaN or inf (by default the conversion stops at the first, naming it)",
    )
    conv.add_argument("--no-vae", action="store_true", help="do not convert the VAE the source holds")
    conv.add_argument(
        "--no-text-encoder",
        action="store_true",
        help="do not convert the umT5 text encoder and tokenizer the source holds",
    )
    conv.add_argument(
        "--lora",
        action="append",
        default=[],
        type=_lora_arg,
        metavar="EXPERT=PATH",
        help="merge a DiffSynth LoRA file into an expert: high=PATH, low=PATH (A14B) or dit=PATH; repeatable",
    )
    conv.add_argument(
        "--lora-strength", type=float, default=1.0, help="strength of every --lora (default 1.0, as VBVR)"
    )
    conv.set_defaults(func=_convert)

    run = sub.add_parser(
        "run",
        help="run one of the paper's experiments (resumable; TensorBoard + results.json in --out)",
        description="Settings are NAME=VALUE overrides of the experiment's Config (lists: 1,2,3).",
    )
    run.add_argument("name", choices=list(EXPERIMENTS), help="the experiment (one module of experiments/)")
    run.add_argument("--model", help="a converted Wan folder or a toy export (default: the embedded model)")
    run.add_argument("--data", help="toy[:families[@held_out|@both]] or vbvr-bench:PATH")
    run.add_argument("--out", help="run folder (default runs/NAME); rerun the same command to resume")
    run.add_argument(
        "--mesh",
        help="device mesh: AXIS=SIZE,... over data, fsdp, context, tensor (unnamed axes are 1, product = "
        "the devices present), e.g. data=2,fsdp=2,context=2; or 'auto' (the memory planner picks the mesh "
        "that fits with the least communication). Default: one device",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("overrides", nargs="*", metavar="NAME=VALUE")
    run.set_defaults(func=_run)

    score = sub.add_parser(
        "score",
        help="score a finished VBVR-Bench ensemble run with VBVR-EvalKit again (no model, no generation)",
        description="Retries the scoring step of `cosjax run ensemble ... evalkit=PATH` on its run folder; "
        "results.json is rewritten with the scores.",
    )
    score.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of the ensemble run")
    score.add_argument("--evalkit", help="VBVR-EvalKit checkout (default: the run's evalkit= setting)")
    score.add_argument(
        "--python",
        help="interpreter with the EvalKit's requirements (default: the run's evalkit_python=, "
        "then $COSJAX_EVALKIT_PYTHON, then cosjax's own)",
    )
    score.add_argument("--bench", help="bench folder to score against (default: the run's --data folder)")
    score.set_defaults(func=_score)

    toy = sub.add_parser(
        "train-toy",
        help="train the embedded toy model on the synthetic tasks (resumable), optionally export it",
        description="Recipe fields are NAME=VALUE overrides (see experiments/train_toy.py).",
    )
    toy.add_argument("--workdir", required=True, help="checkpoints, TensorBoard, config; rerun to resume")
    toy.add_argument("--export", help="write the trained model folder here when training ends")
    toy.add_argument("--quiet", action="store_true", help="no progress bar")
    toy.add_argument("overrides", nargs="*", metavar="NAME=VALUE")
    toy.set_defaults(func=_train_toy)

    demo = sub.add_parser(
        "demo", help="the embedded model on toy tasks: x0-hat trajectories, noise probes, ensemble"
    )
    demo.add_argument("--cases", type=int, default=4, help="cases per family (and split) to probe")
    demo.add_argument("--model", help="a toy model folder (default: the embedded model)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--out", default="runs/demo", help="folder for the demo's outputs")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    level = os.environ.get("COSJAX_LOG", "WARNING").upper()  # INFO: per-host progress of a pod run
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command not in ("run", "train-toy") or any(a.startswith("-") for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # NAME=VALUE overrides given after options
        args.overrides = [*args.overrides, *extra]
    from cosjax.parallel import initialize_distributed

    initialize_distributed()  # multi-host runs (COSJAX_DISTRIBUTED=1, set by tpu/run.sh); else a no-op
    try:
        return args.func(args)
    except (ValueError, KeyError, FileExistsError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"cosjax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from cosjax.evalkit import EvalKitError

        if not isinstance(e, EvalKitError):
            raise
        print(f"cosjax {args.command}: scoring failed: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

"""The `cosjax` command line: `cosjax convert ...`, `cosjax demo`."""

from __future__ import annotations

import argparse
import json
import logging
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
    from cosjax.demo import run_demo

    run_demo(preset=args.preset, seed=args.seed, steps=args.steps, out=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
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

    demo = sub.add_parser("demo", help="run a small flow-matching demo on a random tiny DiT")
    demo.add_argument("--preset", default="tiny")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=8)
    demo.add_argument("--out", default="runs/demo", help="folder for the demo's outputs")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from cosjax.parallel import initialize_distributed

    initialize_distributed()  # multi-host runs (COSJAX_DISTRIBUTED=1, set by tpu/run.sh); else a no-op
    try:
        return args.func(args)
    except (ValueError, FileExistsError) as e:  # CheckpointError is a ValueError
        print(f"cosjax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

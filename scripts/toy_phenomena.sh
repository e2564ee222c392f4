#!/usr/bin/env bash
# The issue-14 figures of a toy model, each an experiment folder under OUT (results.json, plots/,
# TensorBoard tb/; every run resumable: rerun the same command after an interruption).
#
#   scripts/toy_phenomena.sh                          # the embedded model, 300 cases per family and split
#   scripts/toy_phenomena.sh runs/toy-export runs/phenomena 300 50
#
# Arguments: MODEL (toy model folder; "" = the embedded model), OUT (default runs/phenomena), CASES
# (trajectory and ensemble: per family and split, default 300), PROBE_CASES (noise-perturbation,
# latent-swap: in-domain cases per family, default 50; each case costs one run per step and frame,
# or per layer and swapped step). Cases are the experiments' default seeds (100000 + i), disjoint
# from the training seeds (0 ..) and from the preset sweep's (50000 +) and reference check's (70000 +).
# SWAP_STEPS (env, e.g. 0,1,2): the latent-swap window, default every step of the model's preset
# (each step of it also swapped alone).
# Measured with the defaults on an idle 2-core CPU, the embedded model: 6.1 minutes in all (on an
# older machine beside another job the trajectory part alone took 12); probes scale with PROBE_CASES.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-}"
out="${2:-runs/phenomena}"
cases="${3:-300}"
probe="${4:-50}"
cosjax="${COSJAX:-.venv/bin/cosjax}"
args=(--quiet)
if [ -n "$model" ]; then args+=(--model "$model"); fi
swap=()
if [ -n "${SWAP_STEPS:-}" ]; then swap=(swap_steps="$SWAP_STEPS"); fi

"$cosjax" run trajectory "${args[@]}" --data toy:@both --out "$out/trajectory" \
  cases="$cases" labelled_grids=2 case_files=4
"$cosjax" run ensemble "${args[@]}" --data toy:@both --out "$out/ensemble" cases="$cases"
"$cosjax" run noise-perturbation "${args[@]}" --data toy:maze_long,maze_routes --out "$out/noise-perturbation" \
  cases="$probe"
"$cosjax" run latent-swap "${args[@]}" --data toy:move --out "$out/latent-swap-move" \
  cases="$probe" per_step=true "${swap[@]}"
"$cosjax" run latent-swap "${args[@]}" --data toy:maze_long --out "$out/latent-swap-maze_long" \
  cases="$probe" per_step=true "${swap[@]}"
"$cosjax" run layer-energy "${args[@]}" --data toy --out "$out/layer-energy" cases=8
"$cosjax" run information-flow "${args[@]}" --data toy --out "$out/information-flow" cases=16 \
  perturb_steps=0,1,2,3,5,7,9
echo "figures: $out/*/plots/*.png; tensorboard --logdir $out"

"""The `--mesh auto` table: the mesh the memory planner picks for Wan2.2-I2V-A14B on Cloud TPU slices.

    .venv/bin/python benchmarks/mesh_table.py        # prints the markdown table of benchmarks/README.md

Paper-only (no devices needed): `cosjax.memory.choose_mesh` on the slice's chip count and HBM per
chip, both experts resident in bfloat16, CFG (DiT batch 2), the `vbvr` preset's Euler solver,
splash (flash) attention as on TPU, 81 frames at 480p (832x480) and 720p (1280x720).
`tests/test_auto_mesh.py` checks that the README holds exactly these rows.
"""

from __future__ import annotations

from cosjax.configs import get_preset
from cosjax.memory import GiB, choose_mesh, communication_bytes, global_mesh_shape

# gcloud accelerator type -> (chips, HBM GiB per chip, hosts); v5p-N counts TensorCores (2 per chip);
# v5litepod-8, v5p-8 and v6e-8 are one host, v6e-16 is 4 hosts of 4 chips
SLICES = {"v5litepod-8": (8, 16, 1), "v5p-8": (4, 95, 1), "v6e-8": (8, 32, 1), "v6e-16": (16, 32, 4)}
SIZES = {"480p": (832, 480), "720p": (1280, 720)}
FRAMES = 81


def rows() -> list[list[str]]:
    """[slice, chips x HBM, size, mesh or 'refused', GiB per device, GiB sent per forward, note]."""
    preset = get_preset("wan2.2-i2v-a14b")
    out = []
    for name, (chips, hbm, hosts) in SLICES.items():
        for label, (width, height) in SIZES.items():
            kwargs = dict(attention="flash", solver="euler", vae_stride=preset.vae_stride)
            try:
                plan = choose_mesh(preset.dit, 2, FRAMES, height, width, chips, hbm * GiB, hosts, **kwargs)
            except ValueError as e:
                first = str(e).splitlines()[0]
                fix = first.split("Fix: ")[1].split(" (then")[0] if "Fix: " in first else "-"
                out.append([name, f"{chips} x {hbm} GiB", label, "refused", "-", "-", fix])
                continue
            mesh = ",".join(f"{a}={n}" for a, n in global_mesh_shape(plan, hosts).items() if n > 1)
            out.append(
                [
                    name,
                    f"{chips} x {hbm} GiB",
                    label,
                    mesh,
                    f"{plan.total / GiB:.1f}",
                    f"{communication_bytes(plan) / GiB:.1f}",
                    f"params {plan.parameters / GiB:.1f} GiB, activations {plan.activations / GiB:.1f} GiB",
                ]
            )
    return out


def table() -> str:
    header = ["slice", "chips", "81 frames", "--mesh auto", "GiB/device (x1.2)", "GiB sent/forward", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows()])


if __name__ == "__main__":
    print(table())

"""The demo's one-page view: every figure of the demo's experiments with one sentence each.

`write_page(out_dir, sections, report)` writes `out_dir/index.html` (plain HTML, atomic): per
experiment a heading, then each figure of its summary's "figures" list ({"file": path relative to
the experiment's folder, "caption": one sentence}) as an <img> by relative path with its caption,
then the printed results tables. Figures whose file is missing (e.g. not written on this process)
are left out, so every image the page names exists.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from cosjax.paths import user_path, write_atomic

PAGE = "index.html"

HEADINGS = {
    "trajectory": "When does the answer appear? (x0-hat at every denoising step)",
    "noise-perturbation": "Noise at a step vs noise at a frame",
    "latent-swap": "Which block at which step decides? (latent swap)",
    "ensemble": "The training-free ensemble vs the plain sampler",
}


def page_html(out_dir, sections: Mapping[str, list[dict]], report: str = "") -> str:
    """The page's HTML; sections: {experiment folder name: its figures [{file, caption}]}."""
    out_dir = user_path(out_dir)
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>cosjax demo</title></head><body>',
        "<h1>cosjax demo: the embedded model, step by step</h1>",
        "<p>Each figure below comes from one experiment of <code>cosjax demo</code>; the sentence under "
        "it says what it shows. TensorBoard holds the same figures: "
        f"<code>tensorboard --logdir {html.escape(str(out_dir))}</code>.</p>",
    ]
    for name, figures in sections.items():
        parts.append(f"<h2>{html.escape(HEADINGS.get(name, name))}</h2>")
        for fig in figures:
            file = f"{name}/{fig['file']}"
            if not (out_dir / file).exists():
                continue
            src = html.escape(file, quote=True)
            parts.append(
                f'<figure><img src="{src}" alt="{src}" style="max-width:100%">'
                f"<figcaption>{html.escape(fig['caption'])}</figcaption></figure>"
            )
    if report:
        parts.append(f"<h2>The printed tables</h2><pre>{html.escape(report)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_page(out_dir, sections: Mapping[str, list[dict]], report: str = ""):
    """Writes `out_dir/index.html` (`page_html`) atomically; returns its path."""
    path = user_path(out_dir) / PAGE
    write_atomic(path, page_html(out_dir, sections, report))
    return path

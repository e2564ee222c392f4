"""Stand-ins for what a test does not build for real: a pooling VAE and an interpreter that fails."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp


class PoolVAE:
    """A stand-in VAE with the Wan2.1 geometry (4x8x8, causal first frame, 16 channels): averages
    pixel blocks. It lets the conditioning layout be tested without VAE weights."""

    def encode(self, video):
        b, c, f, h, w = video.shape
        first = video[:, :, :1]
        rest = video[:, :, 1:].reshape(b, c, (f - 1) // 4, 4, h, w).mean(3) if f > 1 else video[:, :, :0]
        x = jnp.concatenate([first, rest], axis=2)
        x = x.reshape(b, c, x.shape[2], h // 8, 8, w // 8, 8).mean((4, 6))
        return jnp.concatenate([x] * 5 + [x[:, :1]], axis=1)  # 16 channels


def failing_python(tmp_path: Path) -> Path:
    """An interpreter without the EvalKit's requirements: every run fails as a Python without cv2."""
    exe = tmp_path / "bin" / "python-without-cv2"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
        "echo \"ModuleNotFoundError: No module named 'cv2'\" >&2\nexit 1\n"
    )
    exe.chmod(0o755)
    return exe

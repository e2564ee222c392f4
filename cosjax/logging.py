"""TensorBoard summaries through tensorboardX, written by process 0 only.

Every process may call the writer; on processes other than 0 it does nothing, so multi-host code
needs no `if` around logging. Videos are written as animated GIFs encoded with imageio (tensorboardX's
own `add_video` needs moviepy and silently writes nothing without it).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cosjax.parallel import is_main_process


class Writer:
    """A process-0 TensorBoard writer for one run folder.

    Args:
      logdir: the run folder (created on process 0 only).
    """

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self._writer = None
        if is_main_process():
            from tensorboardX import SummaryWriter

            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.logdir))

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer:
            self._writer.add_scalar(tag, float(value), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self._writer:
            self._writer.add_text(tag, text, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """image: uint8 or float in [0, 1], [H, W, 3] or [H, W]."""
        if self._writer:
            arr = np.asarray(image)
            self._writer.add_image(tag, arr, step, dataformats="HWC" if arr.ndim == 3 else "HW")

    def video(self, tag: str, frames: np.ndarray, step: int, fps: int = 8) -> None:
        """frames: uint8 [F, H, W, 3], shown as an animated GIF."""
        if not self._writer:
            return
        import imageio.v3 as iio
        from tensorboardX.proto.summary_pb2 import Summary

        frames = np.asarray(frames, np.uint8)
        buffer = io.BytesIO()
        iio.imwrite(buffer, frames, extension=".gif", duration=1000 / fps, loop=0)
        gif = Summary.Image(
            height=frames.shape[1],
            width=frames.shape[2],
            colorspace=3,
            encoded_image_string=buffer.getvalue(),
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=gif)])
        self._writer._get_file_writer().add_summary(summary, step)

    def flush(self) -> None:
        if self._writer:
            self._writer.flush()

    def close(self) -> None:
        if self._writer:
            self._writer.close()
            self._writer = None

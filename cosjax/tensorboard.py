"""TensorBoard summaries through tensorboardX, written by process 0 only.

Every process may call the writer; on processes other than 0 it does nothing, so multi-host code
needs no `if` around logging. Each writer's event file name ends in `.PID.RANDOM`, so runs started
together in one folder (same second, same host) never share a file. A URL logdir (`gs://...`) is
written locally and uploaded through `etils.epath` at every `flush` and at `close`. Videos are
written as animated GIFs (`cosjax.outputs.encode_gif`) (tensorboardX's own `add_video` needs moviepy and
silently writes nothing without it).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import uuid
from pathlib import Path

import numpy as np

from cosjax.outputs import encode_gif
from cosjax.parallel import is_main_process
from cosjax.paths import is_local, user_path


class Writer:
    """A process-0 TensorBoard writer for one run folder.

    Args:
      logdir: the run folder (created on process 0 only): a local path or a URL.
      active: whether this process writes (None: process 0 only). A multi-host run's work-group
        leads log their own cases (`cosjax.runs`), each to its own event file.
    """

    def __init__(self, logdir: str | Path, active: bool | None = None):
        self.logdir = user_path(logdir)
        self._writer = None
        if is_main_process() if active is None else active:
            from tensorboardX import SummaryWriter

            local = self.logdir
            if not is_local(local):  # staged here, uploaded by _upload
                local = pathlib.Path(tempfile.mkdtemp(prefix="cosjax-tb-"))
            local.mkdir(parents=True, exist_ok=True)
            self._local = local
            unique = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
            self._writer = SummaryWriter(str(local), filename_suffix=unique)

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
        from tensorboardX.proto.summary_pb2 import Summary

        frames = np.asarray(frames, np.uint8)
        _, h, w, _ = frames.shape
        gif = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=encode_gif(frames, fps))
        summary = Summary(value=[Summary.Value(tag=tag, image=gif)])
        self._writer._get_file_writer().add_summary(summary, step)

    def flush(self) -> None:
        if self._writer:
            self._writer.flush()
            self._upload()

    def close(self) -> None:
        if self._writer:
            self._writer.close()
            self._writer = None
            self._upload()

    def _upload(self) -> None:
        """Copies the local event files to a URL logdir (nothing to do for a local one)."""
        if is_local(self.logdir):
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        for file in sorted(self._local.iterdir()):
            (self.logdir / file.name).write_bytes(file.read_bytes())

"""VBVR-Bench read from the local `VBVR-Bench-Data` folder, cross-checked against its `VBVR-Bench.json`.

Layout (the HF dataset `Video-Reason/VBVR-Bench-Data`, which the EvalKit's GT lookup also uses)::

    ROOT/VBVR-Bench.json            a list of {id, prompt, first_image (base64), first_frame_path,
                                    final_frame_path, prompt_path, ground_truth_video_path}, paths
                                    relative to ROOT ("In-Domain_50/<task>/00000/first_frame.png")
    ROOT/{In-Domain_50,Out-of-Domain_50}/<task>/<00000..00004>/
        first_frame.png  final_frame.png  ground_truth.mp4  prompt.txt

The published bench is 50 + 50 tasks x 5 samples (250 + 250). Two readers, one listing:

* `inspect_bench(ROOT)` / `scan_bench(ROOT)`: what every `cosjax run ... --data vbvr-bench:ROOT`
  uses. Lists the samples on disk, checks each, and cross-checks the manifest: a listed sample whose
  folder is absent is named in a warning and counted missing (the run proceeds on the rest).
* `load_bench(ROOT)`: a tfds dataset (array_record, no TensorFlow) of the same samples, built from
  `scan_bench`, for reading images and prompts as records from your own code. No experiment uses it.

index = inspect_bench(ROOT)         # .samples (found), .absent (listed, not on disk), .counts()
frames, h, w = generation_size((s.height, s.width), s.gt_frames)
write_mp4(video_path(OUT / "my_model", s), frames_uint8, FPS, 5)  # cosjax.outputs; what the EvalKit reads
sources = load_bench(ROOT)          # {"in_domain": source, "out_of_domain": source}, random access
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from cosjax.geometry import round_up_frames
from cosjax.outputs import quiet_fork
from cosjax.paths import local_file, require_local, user_path

log = logging.getLogger(__name__)

SPLITS = ("In-Domain_50", "Out-of-Domain_50")
TFDS_SPLITS = {"In-Domain_50": "in_domain", "Out-of-Domain_50": "out_of_domain"}
FILES = ("first_frame.png", "final_frame.png", "ground_truth.mp4", "prompt.txt")
FPS = 16
MANIFEST = "VBVR-Bench.json"
# The published bench: 50 tasks per split, 5 samples per task (VBVR paper; HF card).
TASKS_PER_SPLIT = 50
SAMPLES_PER_TASK = 5
# Manifest path field -> the file it names (every entry's four paths share one sample folder).
MANIFEST_PATHS = {
    "first_frame_path": FILES[0],
    "final_frame_path": FILES[1],
    "ground_truth_video_path": FILES[2],
    "prompt_path": FILES[3],
}
DOWNLOAD = "huggingface-cli download Video-Reason/VBVR-Bench-Data --repo-type dataset --local-dir {root}"

# Task id -> cognitive category, as in the EvalKit's TASK_CATEGORY_MAP (vbvr_bench/evaluators/__init__.py),
# which keys full folder names ("O-39_maze_data-generator"); we key the id prefix so renamed folders match.
_CATEGORY_IDS = {
    "Abstraction": "O-10 O-12 O-13 O-14 O-21 O-29 O-30 O-37 O-45 O-47 G-29 G-41 G-51 G-131 G-134 "
    "O-9 O-11 O-43 O-49 O-54 O-56 G-135 G-193",
    "Knowledge": "O-15 O-18 O-19 O-23 O-24 O-34 O-52 O-53 O-75 O-62 G-160 G-217 G-247 G-273",
    "Perception": "O-16 O-31 O-33 O-38 G-3 G-5 G-9 G-39 G-43 G-138 G-158 O-2 O-65 G-54 G-136 G-147 G-161 "
    "G-167 G-168 G-169 G-174 G-189 G-202 G-206 G-212 G-218 G-222 G-223 G-248 G-250",
    "Spatiality": "O-25 O-55 G-13 G-15 G-16 G-18 G-31 G-45 O-39 G-47 G-140 G-219 G-221",
    "Transformation": "O-32 O-36 O-44 G-8 G-21 G-25 G-194 O-5 O-6 O-22 O-27 O-46 O-58 O-59 O-60 O-61 "
    "O-64 O-85 G-24 G-240",
}
TASK_CATEGORY = {tid: cat for cat, ids in _CATEGORY_IDS.items() for tid in ids.split()}
CATEGORIES = tuple(_CATEGORY_IDS)


class BenchDataError(ValueError):
    """The bench folder is missing or malformed; `problems` lists one 'PATH: what is wrong' per issue."""

    def __init__(self, root: Path, problems: list[str]):
        self.root, self.problems = root, problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"VBVR-Bench folder {root} is missing or malformed ({len(problems)} problems):\n{lines}\n"
            f"fix: download the bench again into the same folder (`{DOWNLOAD.format(root=root)}` "
            "fetches only what is absent or damaged), or remove a broken sample folder to run without "
            "it (it is then counted missing)"
        )


@dataclass(frozen=True)
class AbsentSample:
    """A sample `VBVR-Bench.json` lists whose folder is not on disk: counted missing, never generated."""

    split: str
    task: str
    index: str

    key = property(lambda self: f"{self.split}/{self.task}/{self.index}")
    category = property(lambda self: task_category(self.task))
    in_domain = property(lambda self: self.split == SPLITS[0])


@dataclass(frozen=True)
class BenchSample:
    """One bench sample: paths, prompt (stripped, as the reference inference reads it) and sizes.

    height/width: the first frame's size in pixels; gt_frames: frames in ground_truth.mp4.
    """

    split: str  # "In-Domain_50" | "Out-of-Domain_50"
    task: str  # the task folder name, e.g. "O-39_maze_data-generator"
    index: str  # "00000"
    folder: Path
    prompt: str
    category: str  # Abstraction | Knowledge | Perception | Spatiality | Transformation | unknown
    height: int
    width: int
    gt_frames: int

    @property
    def in_domain(self) -> bool:
        return self.split == SPLITS[0]

    @property
    def key(self) -> str:
        """'<split>/<task>/<index>', the sample's id here and in `cosjax.evalkit`."""
        return f"{self.split}/{self.task}/{self.index}"

    @property
    def task_id(self) -> str:
        return task_id(self.task)

    first_frame = property(lambda self: self.folder / FILES[0])
    final_frame = property(lambda self: self.folder / FILES[1])
    gt_video = property(lambda self: self.folder / FILES[2])
    prompt_path = property(lambda self: self.folder / FILES[3])


def task_id(task: str) -> str:
    """'O-39_maze_data-generator' -> 'O-39' ('' if the name does not start with an id)."""
    m = re.match(r"([A-Za-z]+-\d+)(?!\d)", task)
    return m.group(1) if m else ""


def task_category(task: str) -> str:
    """The EvalKit's cognitive category of a task folder name, matched on its id; 'unknown' otherwise."""
    return TASK_CATEGORY.get(task_id(task), "unknown")


def count_frames(path: str | Path) -> int:
    """Frames in a video, counted by imageio-ffmpeg's bundled ffmpeg (stream copy, one per packet).

    The reference inference counts packets with ffprobe (`-count_packets`); this is the same count.
    """
    import imageio_ffmpeg

    with quiet_fork(), local_file(user_path(path)) as file:  # ffmpeg reads a local copy of a URL
        return int(imageio_ffmpeg.count_frames_and_secs(str(file))[0])


def _scan_sample(split: str, task: str, folder: Path, problems: list[str]) -> BenchSample | None:
    n_before = len(problems)
    for name in FILES:
        if not (folder / name).is_file():
            problems.append(f"{folder / name}: missing")
    if len(problems) > n_before:
        return None
    from PIL import Image

    sizes = []
    for name in FILES[:2]:
        try:
            with (folder / name).open("rb") as f, Image.open(f) as im:  # local or a URL
                im.verify()
                sizes.append((im.height, im.width))
        except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
            problems.append(f"{folder / name}: unreadable image ({type(e).__name__}: {e})")
    try:
        prompt = (folder / FILES[3]).read_text(encoding="utf-8").strip()
        if not prompt:
            problems.append(f"{folder / FILES[3]}: empty prompt")
    except UnicodeDecodeError as e:
        problems.append(f"{folder / FILES[3]}: not UTF-8 text ({e})")
    try:
        gt_frames = count_frames(folder / FILES[2])
        if gt_frames < 1:
            problems.append(f"{folder / FILES[2]}: video has no frames")
    except Exception as e:  # noqa: BLE001
        problems.append(f"{folder / FILES[2]}: unreadable video ({type(e).__name__}: {str(e)[-200:]})")
    if len(problems) > n_before:
        return None
    h, w = sizes[0]
    return BenchSample(split, task, folder.name, folder, prompt, task_category(task), h, w, gt_frames)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass(frozen=True)
class ManifestEntry:
    """One entry of VBVR-Bench.json: its id, prompt and the sample folder its four paths name."""

    id: str
    prompt: str
    split: str
    task: str
    index: str

    key = property(lambda self: f"{self.split}/{self.task}/{self.index}")


def _entry_place(entry: dict, field: str) -> tuple[str, str, str] | str:
    """(split, task, index) of one path field of an entry, or what is wrong with it."""
    raw = entry.get(field)
    if not isinstance(raw, str) or not raw:
        return f"{field} is missing or not a string"
    parts = [q for q in raw.replace("\\", "/").split("/") if q not in ("", ".")]
    at = next((i for i, q in enumerate(parts) if q in SPLITS), None)
    if at is None or len(parts) - at != 4:
        return f"{field} {raw!r} is not <split>/<task>/<index>/<file> with split {' or '.join(SPLITS)}"
    split, task, index, name = parts[at:]
    if not re.fullmatch(r"\d{5}", index) or name != MANIFEST_PATHS[field]:
        return f"{field} {raw!r} does not name <5-digit index>/{MANIFEST_PATHS[field]}"
    return split, task, index


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """The entries of a `VBVR-Bench.json`, in file order, each checked (keys, paths, duplicates).

    Raises BenchDataError naming the file and every bad entry (by position and id). The base64
    `first_image` of each entry is not decoded: the sample's first_frame.png is what is read.
    """
    path = user_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BenchDataError(path.parent, [f"{path}: not readable JSON ({type(e).__name__}: {e})"]) from e
    if not isinstance(data, list):
        raise BenchDataError(
            path.parent, [f"{path}: expected a JSON list of entries, got {type(data).__name__}"]
        )
    problems, entries, seen = [], [], {}
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not an object")
            continue
        where += f" (id {entry.get('id')!r})"
        places = {field: _entry_place(entry, field) for field in MANIFEST_PATHS}
        bad = [v for v in places.values() if isinstance(v, str)]
        if not isinstance(entry.get("prompt"), str):
            bad.append("prompt is missing or not a string")
        if "id" not in entry:
            bad.append("id is missing")
        if not bad and len(set(places.values())) != 1:
            bad.append(f"its paths name different sample folders: {sorted(set(places.values()))}")
        if bad:
            problems.append(f"{where}: {'; '.join(bad)}")
            continue
        e = ManifestEntry(str(entry["id"]), entry["prompt"], *places["prompt_path"])
        if e.key in seen:
            problems.append(f"{where}: sample {e.key} already listed by entry {seen[e.key]}")
            continue
        seen[e.key] = i
        entries.append(e)
    if problems:
        raise BenchDataError(path.parent, problems)
    return entries


@dataclass
class BenchIndex:
    """What a bench folder holds, against what its VBVR-Bench.json lists and the published 100 x 5.

    samples: the valid samples on disk, sorted by key (only those the manifest lists, if it exists).
    absent: samples the manifest lists whose folder is not on disk (counted missing by every summary).
    unlisted: keys of sample folders on disk that the manifest does not list (ignored).
    manifest: the VBVR-Bench.json read, or None when ROOT has none (absent samples cannot be named).
    prompt_mismatch: keys whose prompt.txt differs from the manifest's prompt (prompt.txt is used, as
      by the reference inference).
    """

    root: Path
    samples: list[BenchSample]
    absent: list[AbsentSample]
    unlisted: list[str]
    manifest: Path | None
    prompt_mismatch: list[str]

    def counts(self) -> dict:
        """{split: {tasks_expected, tasks_found, samples_expected, samples_listed, samples_found,
        samples_absent}} for both split folders and "total"; samples_listed is None without a manifest.
        """
        out = {}
        for split in SPLITS:
            found = [s for s in self.samples if s.split == split]
            absent = [s for s in self.absent if s.split == split]
            out[split] = {
                "tasks_expected": TASKS_PER_SPLIT,
                "tasks_found": len({s.task for s in found}),
                "samples_expected": TASKS_PER_SPLIT * SAMPLES_PER_TASK,
                "samples_listed": None if self.manifest is None else len(found) + len(absent),
                "samples_found": len(found),
                "samples_absent": len(absent),
            }
        out["total"] = {
            k: None if any(out[s][k] is None for s in SPLITS) else sum(out[s][k] for s in SPLITS)
            for k in out[SPLITS[0]]
        }
        return out

    def describe(self) -> str:
        """One line: found / expected per split, how many the manifest lists and how many are absent."""
        c = self.counts()
        parts = [
            f"{split} {c[split]['samples_found']}/{c[split]['samples_expected']} samples in "
            f"{c[split]['tasks_found']}/{c[split]['tasks_expected']} tasks"
            for split in SPLITS
        ]
        t = c["total"]
        listed = (
            f"VBVR-Bench.json lists {t['samples_listed']}, {t['samples_absent']} of them absent"
            if self.manifest is not None
            else f"no {MANIFEST} (absent samples cannot be named)"
        )
        return (
            f"VBVR-Bench {self.root}: {t['samples_found']} of the published {t['samples_expected']} "
            f"samples found ({'; '.join(parts)}); {listed}"
        )


def _named(keys: list[str], limit: int = 20) -> str:
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def inspect_bench(root: str | Path) -> BenchIndex:
    """Lists and checks every sample of the bench folder, and cross-checks `ROOT/VBVR-Bench.json`.

    All problems are collected first and raised together as one `BenchDataError` naming each bad
    path, so nothing downstream starts on a broken folder: a sample folder present but incomplete or
    damaged (missing file, unreadable png / mp4, empty prompt), a sample folder not named by a
    5-digit index, an empty split or task folder, a malformed manifest, no split folder at all. Reads
    every png header and counts each GT video's frames (about 40 ms per sample).

    With a manifest, a sample it lists whose folder is absent (a subset or partial download, a
    missing task or split folder) is not an error: it is named in a logged warning, kept in
    `absent` and counted missing by the summaries, and the run proceeds on what exists. A split
    folder absent while ROOT holds other folders is an error (likely misnamed). Without a manifest
    the folder scan alone decides (and a warning says absent samples cannot be named).
    """
    root = user_path(root)
    if not root.is_dir():
        raise BenchDataError(root, [f"{root}: not a directory (expected the VBVR-Bench-Data folder)"])
    manifest_path = root / MANIFEST
    problems: list[str] = []
    entries: dict[str, ManifestEntry] | None = None
    if manifest_path.is_file():
        try:
            entries = {e.key: e for e in read_manifest(manifest_path)}
        except BenchDataError as e:
            problems += e.problems
    samples: list[BenchSample] = []
    on_disk: set[str] = set()
    others = [p.name for p in _subdirs(root) if p.name not in SPLITS]
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            if entries is None or others:  # with a manifest, its samples there are absent
                found = ", ".join(p.name for p in _subdirs(root)) or "nothing"
                problems.append(f"{split_dir}: missing split folder (folders found in {root}: {found})")
            continue
        tasks = _subdirs(split_dir)
        if not tasks:
            problems.append(f"{split_dir}: no task folders")
        for task_dir in tasks:
            sample_dirs = _subdirs(task_dir)
            if not sample_dirs:
                problems.append(f"{task_dir}: no sample folders")
            for folder in sample_dirs:
                key = f"{split}/{task_dir.name}/{folder.name}"
                if not re.fullmatch(r"\d{5}", folder.name):
                    problems.append(f"{folder}: sample folder is not named by a 5-digit index (00000, ...)")
                    continue
                on_disk.add(key)
                if entries is not None and key not in entries:
                    continue  # unlisted: not part of the bench, not checked
                if (sample := _scan_sample(split, task_dir.name, folder, problems)) is not None:
                    samples.append(sample)
    if problems:
        raise BenchDataError(root, problems)
    if entries is None:
        index = BenchIndex(root, samples, [], [], None, [])
        if len(samples) < TASKS_PER_SPLIT * SAMPLES_PER_TASK * len(SPLITS):
            log.warning("%s; the samples found are used", index.describe())
        return index
    absent = [AbsentSample(e.split, e.task, e.index) for k, e in sorted(entries.items()) if k not in on_disk]
    unlisted = sorted(on_disk - set(entries))
    mismatch = [s.key for s in samples if s.prompt != entries[s.key].prompt.strip()]
    index = BenchIndex(root, samples, absent, unlisted, manifest_path, mismatch)
    if absent:
        log.warning(
            "%s. Absent (listed in %s, no folder; counted missing, not generated): %s",
            index.describe(),
            manifest_path,
            _named([a.key for a in absent]),
        )
    elif len(samples) < TASKS_PER_SPLIT * SAMPLES_PER_TASK * len(SPLITS):
        log.warning("%s", index.describe())
    if unlisted:
        log.warning(
            "%s sample folders are not listed in %s and are ignored: %s",
            len(unlisted),
            manifest_path,
            _named(unlisted),
        )
    if mismatch:
        log.warning(
            "%s prompt.txt files differ from the prompt in %s (prompt.txt is used): %s",
            len(mismatch),
            manifest_path,
            _named(mismatch),
        )
    return index


def scan_bench(root: str | Path) -> list[BenchSample]:
    """The valid samples on disk, sorted by (split, task, index): `inspect_bench(root).samples`."""
    return inspect_bench(root).samples


def generation_size(first_frame_hw: tuple[int, int], gt_frames: int) -> tuple[int, int, int]:
    """(frames, height, width) the reference inference generates for a sample.

    VBVR's `eval_vbvr_bench.py` calls DiffSynth's `WanVideoPipeline(height=image.height,
    width=image.width, num_frames=<GT frame count>)`. The pipeline's shape-check unit
    (`check_resize_height_width`, division factors 16/16, time factor 4 remainder 1) rounds UP:
    height/width to the next multiple of 16, and a frame count with `n % 4 != 1` to
    `(n + 3) // 4 * 4 + 1`, i.e. the smallest 4k+1 >= n. The first frame is then resized (PIL) to
    (width, height), and the saved video keeps all `frames` frames (it is not trimmed back to n).
    """
    h, w = (int(v) for v in first_frame_hw)
    n = int(gt_frames)
    if min(h, w, n) < 1:
        raise ValueError(
            f"sizes must be positive, got first_frame_hw={first_frame_hw}, gt_frames={gt_frames}"
        )
    height, width = -(-h // 16) * 16, -(-w // 16) * 16
    frames = round_up_frames(n, 4)
    return frames, height, width


def video_path(out_root: str | Path, sample: BenchSample) -> Path:
    """OUT_ROOT/<split>/<task>/<index>.mp4: the layout `run_evaluation.py --model_path OUT_ROOT` reads.

    The EvalKit takes OUT_ROOT's folder name as the model name (results file
    `<name>_vbvr_results.json`), so give each model / run its own OUT_ROOT. It only picks up files
    named exactly `\\d{5}.mp4` in task folders whose name is a key of its evaluator map.
    """
    return user_path(out_root) / sample.split / sample.task / f"{sample.index}.mp4"


# ----------------------------------------------------------------------------- tfds builder


@dataclass
class VbvrBenchConfig(tfds.core.BuilderConfig):
    """root: the local VBVR-Bench-Data folder (else the download config's manual_dir)."""

    root: str = ""


class VbvrBench(tfds.core.GeneratorBasedBuilder):
    """VBVR-Bench as records; splits `in_domain` / `out_of_domain` (250 samples each on the full bench).

    Features: first_frame / final_frame uint8 [H, W, 3] images, prompt / task / split / category /
    index / gt_video (path) text, gt_frames / height / width int32 (first frame size), in_domain bool.
    The GT video itself is not stored. Images are handed to tfds as PIL images, so no TensorFlow is
    needed; read with `as_data_source` (array_record), not `tfds.load`.
    """

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download https://huggingface.co/datasets/Video-Reason/VBVR-Bench-Data and pass its folder as "
        "manual_dir (or use load_bench(root))."
    )
    # No checksums file (nothing is downloaded). tfds's lookup of the module's folder for one needs the
    # `importlib_resources` backport, which is not installed, when the builder lives in a package.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        text = {k: f.Text() for k in ("prompt", "task", "split", "category", "index", "gt_video")}
        ints = {k: f.Scalar(np.int32) for k in ("gt_frames", "height", "width")}
        images = {k: f.Image(shape=(None, None, 3)) for k in ("first_frame", "final_frame")}
        features = f.FeaturesDict({**images, **text, **ints, "in_domain": f.Scalar(np.bool_)})
        # DatasetInfo built directly: dataset_info_from_configs looks for metadata files next to the module.
        return tfds.core.DatasetInfo(
            builder=self,
            description="VBVR-Bench: 100 video-reasoning tasks x 5 samples (first frame + prompt -> video).",
            features=features,
            homepage="https://huggingface.co/datasets/Video-Reason/VBVR-Bench-Data",
        )

    def _split_generators(self, dl_manager):
        root = getattr(self.builder_config, "root", "") or dl_manager.manual_dir
        samples = scan_bench(root)
        return {
            name: self._generate_examples([s for s in samples if s.split == split])
            for split, name in TFDS_SPLITS.items()
        }

    def _generate_examples(self, samples):
        from PIL import Image

        for s in samples:
            images = {}
            for k, p in (("first_frame", s.first_frame), ("final_frame", s.final_frame)):
                with Image.open(p) as im:
                    images[k] = im.convert("RGB")
            yield (
                s.key,
                {
                    **images,
                    "prompt": s.prompt,
                    "task": s.task,
                    "split": s.split,
                    "category": s.category,
                    "index": s.index,
                    "gt_video": str(s.gt_video),
                    "gt_frames": s.gt_frames,
                    "height": s.height,
                    "width": s.width,
                    "in_domain": s.in_domain,
                },
            )


def _fingerprint(root: Path, samples: list[BenchSample]) -> str:
    """Hash of the folder's path and every sample file's (name, size, mtime): names the built dataset."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for s in samples:
        for name in FILES:
            st = (s.folder / name).stat()
            h.update(f"{s.key}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode(record: dict) -> dict:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in record.items()}


def load_bench(root: str | Path, data_dir: str | Path | None = None, as_records: bool = False):
    """Builds the tfds dataset once (cached per folder content) and returns it.

    Returns {"in_domain": source, "out_of_domain": source} of random-access tfds data sources
    (records: dicts with uint8 [H, W, 3] images, bytes text), or with `as_records=True` one list of
    records (text decoded to str) sorted by split/task/index. The folder is validated first
    (`BenchDataError`); the build lives under `data_dir` (default: tfds's, `$TFDS_DATA_DIR` or
    ~/tensorflow_datasets) in a config named by a fingerprint of the folder's path and files, so a
    changed folder is rebuilt and an unchanged one reused.
    """
    root = require_local(user_path(root), "load_bench's folder", "copy the bench locally")
    samples = scan_bench(root)
    config = VbvrBenchConfig(name=f"f{_fingerprint(root, samples)}", root=str(root.resolve()))
    builder = VbvrBench(config=config, data_dir=None if data_dir is None else str(data_dir))
    builder.download_and_prepare(file_format="array_record")
    sources = {name: builder.as_data_source(name) for name in TFDS_SPLITS.values()}
    if not as_records:
        return sources
    records = [_decode(src[i]) for src in sources.values() for i in range(len(src))]
    return sorted(records, key=lambda r: (r["split"], r["task"], r["index"]))

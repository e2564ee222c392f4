"""The EvalKit adapter against a stand-in run_evaluation.py with the EvalKit's command line and output."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from helpers.bench import make_bench, write_manifest
from helpers.fakes import failing_python

from cosjax import evalkit as ek
from cosjax.data import vbvr_bench as vb
from cosjax.outputs import VIDEO_QUALITY, write_mp4

# Test-side imageio reads/writes of mp4s start ffmpeg after JAX is imported; the child execs at once.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
FAKE_EVALKIT = Path(__file__).parent / "fake_evalkit"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return make_bench(tmp_path_factory.mktemp("bench") / "VBVR-Bench-Data")


def generate(samples, out_root: Path, skip=(), black=()) -> None:
    """Writes a video per sample: 8 frames of its first frame, then its GT final frame (or black)."""
    for s in samples:
        if s.key in skip:
            continue
        first, final = imageio.imread(s.first_frame), imageio.imread(s.final_frame)
        last = np.zeros_like(final) if s.key in black else final
        write_mp4(vb.video_path(out_root, s), np.stack([first] * 8 + [last]), vb.FPS, VIDEO_QUALITY["vbvr"])


def expected_score(video: Path, gt_final: Path) -> float:
    """The stand-in's rule, recomputed here from the written files."""
    last = np.asarray(imageio.mimread(video, memtest=False)[-1], np.float64)
    return 1.0 - abs(last.mean() - np.asarray(imageio.imread(gt_final), np.float64).mean()) / 255.0


class RecordingWriter:
    def __init__(self):
        self.scalars, self.texts = {}, {}

    def scalar(self, tag, value, step):
        self.scalars[tag] = (float(value), step)

    def text(self, tag, text, step=0):
        self.texts[tag] = text


def test_scores_parsed_and_missing_video_counts_as_failure(bench, tmp_path):
    samples = vb.scan_bench(bench)
    missing, black = samples[1].key, samples[4].key
    out_root = tmp_path / "videos" / "my_model"
    generate(samples, out_root, skip={missing}, black={black})
    report = ek.run_evalkit(FAKE_EVALKIT, out_root, bench, tmp_path / "eval")

    assert report.results_path == tmp_path / "eval" / "my_model_vbvr_results.json"
    assert set(report.scores) == {s.key for s in samples} - {missing} and not report.errors
    for s in samples:
        if s.key != missing:
            want = expected_score(vb.video_path(out_root, s), s.final_frame)
            assert report.scores[s.key] == pytest.approx(want, abs=1e-9)
    assert report.scores[black] < 0.9 < min(v for k, v in report.scores.items() if k != black)

    summary = ek.summarize(report, samples)
    scores = [report.scores.get(s.key, 0.0) for s in samples]
    assert (summary["num_samples"], summary["num_missing"], summary["num_scored"]) == (6, 1, 5)
    assert summary["missing"] == [missing]
    assert summary["overall"] == pytest.approx(sum(scores) / 6)
    assert summary["in_domain"] == pytest.approx(sum(scores[:4]) / 4)
    assert summary["out_of_domain"] == pytest.approx(sum(scores[4:]) / 2)
    assert summary["category"]["Perception"] == pytest.approx(sum(scores[:2]) / 2)  # includes the missing 0
    assert summary["in_domain_category"] == {
        "Abstraction": summary["category"]["Abstraction"],
        "Perception": pytest.approx(scores[0] / 2),
    }
    skip = summary["skip_missing"]
    assert skip["overall"] == pytest.approx(sum(scores) / 5)
    assert skip["category"]["Perception"] == pytest.approx(scores[0])
    # the EvalKit's own means skip the missing video too
    assert summary["evalkit_reported"]["overall"] == pytest.approx(skip["overall"])
    assert summary["evalkit_reported"]["in_domain"] == pytest.approx(skip["in_domain"])

    writer = RecordingWriter()
    table = ek.log_summary(writer, summary, step=7)
    assert writer.scalars["vbvr/overall"] == (pytest.approx(summary["overall"]), 7)
    assert writer.scalars["vbvr/in_domain"][0] == pytest.approx(summary["in_domain"])
    assert writer.scalars["vbvr/out_of_domain"][0] == pytest.approx(summary["out_of_domain"])
    assert writer.scalars["vbvr/category/Spatiality"][0] == pytest.approx(summary["category"]["Spatiality"])
    assert writer.scalars["vbvr_skip_missing/overall"][0] == pytest.approx(skip["overall"])
    assert writer.scalars["vbvr/num_missing"][0] == 1
    assert "1 of 6 bench videos missing" in table and "| category/Perception |" in table
    assert writer.texts["vbvr/summary"] == table


def test_log_summary_through_the_real_writer(bench, tmp_path):
    from cosjax.tensorboard import Writer

    samples = vb.scan_bench(bench)
    summary = ek.summarize(ek.EvalReport({samples[0].key: 0.5}), samples)
    writer = Writer(tmp_path / "tb")
    table = ek.log_summary(writer, summary)
    writer.close()
    assert "5 of 6" in table and any((tmp_path / "tb").iterdir())


def test_task_unknown_to_the_evalkit_is_counted_missing(bench, tmp_path):
    root = Path(shutil.copytree(bench, tmp_path / "bench"))
    (root / "Out-of-Domain_50/O-39_maze_data-generator").rename(root / "Out-of-Domain_50/O-39_maze")
    write_manifest(root)
    samples = vb.scan_bench(root)
    assert samples[-1].category == "Spatiality"  # matched on its id prefix
    generate(samples, tmp_path / "videos" / "m")
    summary = ek.summarize(
        ek.run_evalkit(FAKE_EVALKIT, tmp_path / "videos" / "m", root, tmp_path / "eval"), samples
    )
    assert summary["num_missing"] == 2 and summary["out_of_domain"] == 0.0
    assert math.isnan(summary["skip_missing"]["out_of_domain"])


def test_no_videos_at_all(bench, tmp_path):
    (tmp_path / "m" / "In-Domain_50").mkdir(parents=True)
    report = ek.run_evalkit(FAKE_EVALKIT, tmp_path / "m", bench, tmp_path / "eval")
    summary = ek.summarize(report, vb.scan_bench(bench))
    assert report.scores == {} and summary["num_missing"] == 6 and summary["overall"] == 0.0
    assert "missing skipped" in ek.log_summary(None, summary)


def test_scorer_error_scores_zero_and_is_not_missing(bench, tmp_path):
    samples = vb.scan_bench(bench)
    generate(samples, tmp_path / "m")
    vb.video_path(tmp_path / "m", samples[0]).write_bytes(b"corrupt")
    report = ek.run_evalkit(FAKE_EVALKIT, tmp_path / "m", bench, tmp_path / "eval")
    summary = ek.summarize(report, samples)
    assert report.scores[samples[0].key] == 0.0 and samples[0].key in report.errors
    assert (summary["num_errors"], summary["num_missing"]) == (1, 0)


def test_stale_results_are_not_reused(bench, tmp_path):
    stale = tmp_path / "eval" / "m_vbvr_results.json"
    stale.parent.mkdir()
    stale.write_text(json.dumps({"samples": [], "summary": {}}))
    (tmp_path / "m" / "In-Domain_50").mkdir(parents=True)
    assert ek.run_evalkit(FAKE_EVALKIT, tmp_path / "m", bench, tmp_path / "eval").results_path is None
    assert not stale.exists()


def test_failing_script_reports_its_stderr(bench, tmp_path):
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "run_evaluation.py").write_text(
        "import sys\nprint('loading evaluators')\n"
        "sys.stderr.write('ModuleNotFoundError: No module named cv2\\n')\nsys.exit(3)\n"
    )
    (tmp_path / "m").mkdir()
    with pytest.raises(ek.EvalKitError, match=r"(?s)exit code 3.*--model_path.*No module named cv2"):
        ek.run_evalkit(kit, tmp_path / "m", bench, tmp_path / "eval")


def test_missing_script_and_malformed_results(bench, tmp_path):
    with pytest.raises(ek.EvalKitError, match="not found: .*run_evaluation.py"):
        ek.run_evalkit(tmp_path / "nowhere", tmp_path, bench, tmp_path / "eval")
    bad = tmp_path / "r.json"
    bad.write_text('{"samples": [{"score": 1}]}')
    with pytest.raises(ek.EvalKitError, match="cannot parse"):
        ek.parse_results(bad)


def test_parse_results_reads_the_evalkit_format(tmp_path):
    sample = {
        "video_path": "/v/In-Domain_50/G-3_x/00002.mp4",
        "video_file": "00002.mp4",
        "task_name": "G-3_x",
        "split": "In_Domain",
        "category": "Perception",
        "folder": "In-Domain_50",
        "score": 0.25,
        "dimensions": {},
        "error": None,
    }
    summary = {"overall": {"mean_score": 0.25, "num_samples": 1, "by_task": {}, "by_category": {}}}
    path = tmp_path / "m_vbvr_results.json"
    path.write_text(json.dumps({"model_name": "m", "samples": [sample], "summary": summary}))
    report = ek.parse_results(path)
    assert report.scores == {"In-Domain_50/G-3_x/00002": 0.25} and report.evalkit_summary == summary


# --- the EvalKit's interpreter, its pre-flight check, scoring failures ------------------------------


def test_interpreter_setting_then_environment_then_our_own(tmp_path, monkeypatch):
    import sys

    bad = failing_python(tmp_path)
    monkeypatch.delenv(ek.PYTHON_ENV, raising=False)
    assert ek.resolve_python(None) == sys.executable
    monkeypatch.setenv(ek.PYTHON_ENV, str(bad))
    assert ek.resolve_python(None) == str(bad)
    assert ek.resolve_python(sys.executable) == sys.executable  # the setting wins
    assert ek.resolve_python("sh") == shutil.which("sh")  # a bare name is looked up on PATH
    with pytest.raises(ek.EvalKitError, match=r"'/nowhere/python' \(from evalkit_python\)"):
        ek.resolve_python("/nowhere/python")
    monkeypatch.setenv(ek.PYTHON_ENV, str(tmp_path))  # a folder
    with pytest.raises(ek.EvalKitError, match=f"from {ek.PYTHON_ENV}"):
        ek.resolve_python(None)


def test_check_evalkit_tries_the_scripts_own_imports(tmp_path):
    import sys

    assert ek.check_evalkit(FAKE_EVALKIT, sys.executable) is None
    problem = ek.check_evalkit(FAKE_EVALKIT, str(failing_python(tmp_path)))
    assert "No module named 'cv2'" in problem and "cosjax[evalkit]" in problem
    assert str(FAKE_EVALKIT / "requirements.txt") in problem
    kit = (
        tmp_path / "kit"
    )  # a script importing a package its folder lacks, as the real one imports vbvr_bench
    kit.mkdir()
    (kit / "run_evaluation.py").write_text("import os\nfrom no_such_pkg.evaluators import get_evaluator\n")
    assert "No module named 'no_such_pkg'" in ek.check_evalkit(kit, sys.executable)
    (kit / "no_such_pkg").mkdir()
    (kit / "no_such_pkg" / "evaluators.py").write_text("get_evaluator = None\n")
    assert ek.check_evalkit(kit, sys.executable) is None  # found in the EvalKit's folder, as the script does
    assert "not found" in ek.check_evalkit(tmp_path / "nowhere", sys.executable)


def test_failure_names_the_interpreter_the_stderr_and_the_fix(bench, tmp_path):
    samples = vb.scan_bench(bench)
    generate(samples[:1], tmp_path / "m")
    bad = failing_python(tmp_path)
    with pytest.raises(ek.EvalKitError) as e:
        ek.run_evalkit(FAKE_EVALKIT, tmp_path / "m", bench, tmp_path / "eval", python=str(bad))
    msg = str(e.value)
    assert f"with interpreter {bad}" in msg and "No module named 'cv2'" in msg
    assert f"{bad} -m pip install 'cosjax[evalkit]'" in msg and "evalkit_python=PY" in msg
    with pytest.raises(ek.EvalKitError, match="reads local folders only.*gs://b/m"):
        ek.run_evalkit(FAKE_EVALKIT, "gs://b/m", bench, tmp_path / "eval")


def test_score_arms_keeps_everything_on_failure_and_scores_on_retry(bench, tmp_path):
    import sys

    samples = vb.scan_bench(bench)
    absent = [vb.AbsentSample("Out-of-Domain_50", "O-39_maze_data-generator", "00002")]
    out = tmp_path / "run"
    for arm in ("plain", "ensemble"):
        generate(samples, out / "videos" / arm)
    before = {p: p.read_bytes() for p in out.rglob("*.mp4")}
    failed = ek.score_arms(
        out,
        ("plain", "ensemble"),
        samples,
        absent,
        bench,
        FAKE_EVALKIT,
        str(failing_python(tmp_path)),
        retry="cosjax score RUN",
    )
    assert failed["scoring"]["status"] == "failed" and "plain" not in failed
    assert "No module named 'cv2'" in failed["scoring"]["error"] and "cosjax score RUN" in failed["table"]
    assert {p: p.read_bytes() for p in out.rglob("*.mp4")} == before  # every video kept
    scored = ek.score_arms(out, ("plain", "ensemble"), samples, absent, bench, FAKE_EVALKIT, sys.executable)
    assert scored["scoring"] == {
        "status": "scored",
        "evalkit": str(FAKE_EVALKIT),
        "python": sys.executable,
        "retry": "",
    }
    for arm in ("plain", "ensemble"):
        s = scored[arm]
        assert (s["num_samples"], s["num_missing"], s["num_absent"]) == (7, 1, 1)
        assert s["missing"] == s["absent"] == [absent[0].key]
        assert s["overall"] == pytest.approx(s["skip_missing"]["overall"] * 6 / 7)
    none = ek.score_arms(out, ("plain",), samples, absent, bench, None, retry="cosjax score RUN")
    assert none["scoring"]["status"] == "not requested" and "cosjax score RUN" in none["table"]


def test_retry_command_round_trips_through_the_cli_parser(tmp_path):
    import shlex

    from cosjax.cli import build_parser

    cmd = ek.retry_command(tmp_path / "my run", "../VBVR-EvalKit", "/opt/ek venv/bin/python")
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert (args.command, args.run_dir, args.evalkit, args.python) == (
        "score",
        str(tmp_path / "my run"),
        "../VBVR-EvalKit",
        "/opt/ek venv/bin/python",
    )


# The third-party modules VBVR-EvalKit's run_evaluation.py and its evaluators import (read from
# Video-Reason/VBVR-EvalKit at 275472f: numpy, tqdm, cv2, PIL) -> the distribution that provides them.
EVALKIT_IMPORTS = {"cv2": "opencv-python-headless", "PIL": "pillow", "numpy": "numpy", "tqdm": "tqdm"}


def test_evalkit_extra_provides_what_the_evalkit_imports():
    import re
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["evalkit"]
    names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in extra}
    assert set(EVALKIT_IMPORTS.values()) <= names, extra


@pytest.mark.skipif(
    not os.environ.get("COSJAX_TEST_EVALKIT"), reason="set COSJAX_TEST_EVALKIT=VBVR-EvalKit dir"
)
def test_the_real_evalkit_scores_our_videos(bench, tmp_path):
    """Opt-in: the real run_evaluation.py (and $COSJAX_EVALKIT_PYTHON, if set) on videos we write."""
    kit = os.environ["COSJAX_TEST_EVALKIT"]
    assert ek.check_evalkit(kit) is None
    samples = vb.scan_bench(bench)
    generate(samples, tmp_path / "m", black={samples[0].key})
    report = ek.run_evalkit(kit, tmp_path / "m", bench, tmp_path / "eval")
    assert set(report.scores) == {s.key for s in samples} and not report.errors, report.errors
    assert all(0.0 <= v <= 1.0 for v in report.scores.values())
    summary = ek.summarize(report, samples)
    assert summary["evalkit_reported"]["overall"] == pytest.approx(summary["skip_missing"]["overall"])


def test_a_run_folder_and_bench_on_a_bucket_are_scored_through_local_copies(bench, tmp_path, bucket):
    """`cosjax score gs://...`: the EvalKit reads plain files, so it scores temporary local copies of
    the videos and ground truth; the scores equal a local run's and land in the bucket."""
    import sys

    from experiments.ensemble import score

    samples = vb.scan_bench(bench)
    local = tmp_path / "local-run"
    for arm in ("plain", "ensemble"):
        generate(samples, local / "videos" / arm, black={samples[2].key} if arm == "plain" else ())
    cases = [f"{s.split}-{s.task}-{s.index}" for s in samples]
    config = {"experiment": "ensemble", "config": {"data": "vbvr-bench:gs://bucket/bench", "cases": None}}
    (local / "config.json").write_text(json.dumps(config))
    for c in cases:
        (local / "cases").mkdir(exist_ok=True)
        (local / "cases" / f"{c}.json").write_text(json.dumps({"case": c}))
    shutil.copytree(bench, bucket.root / "bucket" / "bench")
    shutil.copytree(local, bucket.root / "bucket" / "run")
    remote = score("gs://bucket/run", evalkit=str(FAKE_EVALKIT), python=sys.executable)
    assert remote["scoring"]["status"] == "scored"
    wanted = score(local, evalkit=str(FAKE_EVALKIT), python=sys.executable, bench=str(bench))
    in_bucket = bucket.root / "bucket" / "run"
    for arm in ("plain", "ensemble"):
        assert remote[arm]["overall"] == pytest.approx(wanted[arm]["overall"], abs=1e-12)
        assert remote[arm]["num_samples"] == 6 and remote[arm]["num_missing"] == 0
        assert (in_bucket / "evalkit" / arm / f"{arm}_vbvr_results.json").is_file()
    assert remote["plain"]["overall"] < remote["ensemble"]["overall"]  # the black last frame costs
    results = json.loads((in_bucket / "results.json").read_text())
    assert [r["case"] for r in results["cases"]] == cases and results["summary"]["plain"]["num_scored"] == 6
    assert not any(p.name.startswith(".") for p in in_bucket.rglob("*"))  # no temp file left in the bucket

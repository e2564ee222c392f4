"""The suite without torch: JAX-only tests collect and pass, parity tests skip (never error).

A subprocess hides torch the way an environment without it looks to Python (`sys.modules["torch"]
= None`: `import torch` raises ImportError and `importlib.util.find_spec("torch")` is None), collects
the whole suite and runs a few JAX-only tests next to some that need torch. Every module must collect
(the parity modules as skipped, through `helpers.torch_refs`), and the tests that need torch must be
skipped, not failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

# Every test of these compares with a PyTorch (Diffusers / transformers) reference.
PARITY = {
    "test_convert_components.py",
    "test_dit_parity.py",
    "test_key_coverage.py",
    "test_lora.py",
    "test_reference_numerics.py",
    "test_t5_parity.py",
    "test_vae_coverage.py",
    "test_vae_parity.py",
    "test_weight_guards.py",
}
# Run without torch: (test name, expected outcome). Those that need torch skip in a fixture or test.
RUN = {
    "test_clean_prompt": "passed",
    "test_save_video_quality_per_preset": "passed",
    "test_trace_x0_first_frame_rule_on_ti2v": "passed",
    "test_atomic_files_follow_the_umask": "passed",
    "test_save_dit_never_replaces_a_user_folder": "passed",
    "test_official_quantisation_equals_wan_save_video": "skipped",
    "test_convert_never_touches_its_source": "skipped",
    "test_cli_run_with_relative_model_data_and_out": "skipped",
    "test_bad_sampler_settings": "passed",
    "test_solver_parity": "skipped",
    "test_nothing_recognisable": "passed",
    "test_unknown_preset_and_dtype": "passed",
    "test_missing_key": "skipped",
}

DRIVER = """
import json, sys
sys.modules["torch"] = None  # as if torch were not installed
import pytest

modules, tests = {}, {}

class Record:
    def pytest_collectreport(self, report):
        if report.nodeid.endswith(".py"):
            modules[report.nodeid.rsplit("/", 1)[-1]] = report.outcome

    def pytest_runtest_logreport(self, report):
        name = report.nodeid.split("::")[-1].split("[")[0]
        if report.when == "call" or report.outcome != "passed":
            tests.setdefault(name, set()).add(report.outcome)

code = pytest.main(sys.argv[2:], plugins=[Record()])
out = {"code": int(code), "modules": modules, "tests": {k: sorted(v) for k, v in tests.items()}}
open(sys.argv[1], "w").write(json.dumps(out))
"""


def test_suite_collects_and_jax_tests_pass_without_torch(tmp_path):
    result = tmp_path / "result.json"
    select = " or ".join(RUN)
    args = [str(TESTS), "-q", "-p", "no:cacheprovider", "-k", select, "--basetemp", str(tmp_path / "t")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(result), *args],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(result.read_text())
    failed = sorted(name for name, outcome in out["modules"].items() if outcome == "failed")
    assert not failed, f"modules that do not collect without torch: {failed}\n{proc.stdout[-3000:]}"
    skipped = {name for name, outcome in out["modules"].items() if outcome == "skipped"}
    assert skipped == PARITY, f"skipped modules {sorted(skipped)}"
    test_files = {p.name for p in TESTS.glob("test_*.py")}
    assert set(out["modules"]) >= test_files
    assert {name: "/".join(o) for name, o in out["tests"].items()} == RUN, proc.stdout[-3000:]
    assert out["code"] == 0, proc.stdout[-3000:]

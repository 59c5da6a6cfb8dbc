"""scripts/venv.sh --gpu where NVIDIA's package index cannot be reached: one line, not a pip trace.

A stand-in interpreter plays python/pip: creating a venv works, pip installs work, except the GPU
extras, which fail the way tensorrt-cu13's placeholder does without NVIDIA's index."""

import os
import stat
import subprocess
import textwrap

import pytest

from tests.conftest import ROOT
from tests.test_tensorrt import HAS_CUDA

FAKE_PYTHON = textwrap.dedent("""\
    #!/usr/bin/env bash
    # stand-in for python: `-m venv DIR` makes DIR/bin/python (this script); `-m pip ...` succeeds,
    # except installing requirements-gpu.txt, which fails like tensorrt-cu13's placeholder.
    if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0; fi
    echo "$*" >> "$(dirname "$0")/../pip-calls.txt"
    case "$*" in
      *requirements-gpu.txt*)
        echo "Traceback (most recent call last):"
        echo "RuntimeError: Bad params: the tensorrt-cu13-libs wheel is hosted on NVIDIA's index"
        exit 1;;
    esac
    exit 0
    """)


def run_venv_sh(tmp_path, *args, env_extra=None):
    fake = tmp_path / "python-standin"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    checkout = tmp_path / "checkout"  # a copy, so the real .venv link is never touched
    (checkout / "scripts").mkdir(parents=True)
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-gpu.txt", "scripts/venv.sh"):
        (checkout / name).write_bytes((ROOT / name).read_bytes())
    env = {**os.environ, "PYTHON": str(fake), "STREAM_VENV_ROOT": str(tmp_path / "venvs"), **(env_extra or {})}
    return checkout, subprocess.run(["bash", str(checkout / "scripts/venv.sh"), *args], capture_output=True,
                                    text=True, env=env, timeout=60)


def test_gpu_extras_that_cannot_install_give_one_line_naming_the_index_and_the_wheelhouse(tmp_path):
    checkout, run = run_venv_sh(tmp_path, "--gpu")
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in run.stderr
    assert "NVIDIA's package index" in errors[0] and "STREAM_WHEELHOUSE" in errors[0]
    log = errors[0].rsplit(" ", 1)[-1]
    assert "tensorrt-cu13-libs" in open(log).read()  # pip's own words are kept, in the log
    assert not (checkout / ".venv").exists()  # no half-made environment is linked or marked complete
    assert not list((tmp_path / "venvs").glob("*/.complete"))


def test_a_wheelhouse_installs_without_any_index(tmp_path):
    _, run = run_venv_sh(tmp_path, "--gpu", env_extra={"STREAM_WHEELHOUSE": str(tmp_path / "wheels")})
    assert run.returncode == 1  # the stand-in fails every GPU install; what matters is how pip was called
    calls = next((tmp_path / "venvs").glob("*/pip-calls.txt")).read_text().splitlines()
    gpu = [c for c in calls if "requirements-gpu.txt" in c]
    assert gpu and "--no-index" in gpu[0] and f"--find-links {tmp_path / 'wheels'}" in gpu[0]


def test_the_cpu_environment_is_made_and_linked(tmp_path):
    checkout, run = run_venv_sh(tmp_path)
    assert run.returncode == 0, run.stderr
    assert (checkout / ".venv").is_symlink() and (checkout / ".venv" / ".complete").exists()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "needs a CUDA GPU visible to PyTorch" in run.stderr
    assert not (tmp_path / "out").exists()

"""scripts/device_job.sh: a job started in one device call runs on after the call's processes are killed, and a
later call waits for it and gets its exit code."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_job.sh"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="setsid and bash: the device is Linux")


def job(jobs_dir, *args, **kwargs):
    return subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, "JOBS": str(jobs_dir)},
                          capture_output=True, text=True, **kwargs)


def test_a_job_outlives_the_call_that_started_it(tmp_path):
    """As on the device: the call's shell runs in its own process group, which is killed when the call returns."""
    call = subprocess.Popen(["bash", str(SCRIPT), "start", "j", sys.executable, "-c",
                             "import time; time.sleep(2); print('finished')"],
                            env={**os.environ, "JOBS": str(tmp_path)}, start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    assert call.stdout.readline().startswith("started j")
    os.killpg(call.pid, signal.SIGKILL)  # the end of the call
    call.wait()
    assert not (tmp_path / "j.rc").exists()  # still running
    waited = job(tmp_path, "wait", "j", "60")
    assert waited.returncode == 0 and "finished" in waited.stdout and "ended with exit code 0" in waited.stdout


def test_wait_gives_the_job_exit_code_or_3_while_it_runs(tmp_path):
    assert job(tmp_path, "start", "f", "bash", "-c", "sleep 3; echo out; exit 5").returncode == 0
    early = job(tmp_path, "wait", "f", "0")
    assert early.returncode == 3 and "runs on" in early.stdout
    again = job(tmp_path, "start", "f", "true")
    assert again.returncode == 2 and "running already" in again.stderr
    late = job(tmp_path, "wait", "f", "60")
    assert late.returncode == 5 and "out" in late.stdout
    assert job(tmp_path, "start", "f", "true").returncode == 0  # a finished name may start again


def test_bad_calls_are_one_line_errors(tmp_path):
    for args in (["start"], ["wait", "x"], ["wait", "x", "soon"], ["stop", "x"]):
        result = job(tmp_path, *args)
        assert result.returncode == 2 and result.stderr.startswith("usage:")
    missing = job(tmp_path, "wait", "nothing", "1")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no job nothing")

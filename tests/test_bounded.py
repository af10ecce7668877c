"""The tests' bounded wait kills what torchrun leaves behind: a child in a session of its own."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bounded
import pytest


def _running(pid: int) -> bool:
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped


def test_a_timeout_kills_the_process_and_a_child_in_its_own_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
            f"open(r'{pid_file}', 'w').write(str(c.pid)); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _running(child) and child in bounded.descendants(proc.pid)
        with pytest.raises(pytest.fail.Exception, match="did not finish in 0 s"):
            bounded.communicate_all([proc], timeout_s=0.2)
        assert proc.returncode == -9
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child)
    finally:  # whatever failed above, leave nothing running
        if proc.poll() is None:
            bounded.kill_tree(proc.pid)
            proc.communicate(timeout=30)
        if pid_file.is_file() and pid_file.read_text() and _running(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_run_returns_what_subprocess_run_would() -> None:
    done = bounded.run([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], timeout_s=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "")

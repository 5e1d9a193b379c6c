"""The batch placeholder run for real by /bin/sh: a signal ends it with the pod's exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from slurm_client import placeholder_script, split_exit_code, with_exit_code

MARKER = "slurm-bridge/v1 cluster=c pod=ns/p spec=0123456789ab uid=00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        pytest.param(MARKER, (MARKER, None), id="plain-marker"),
        pytest.param(f"{MARKER} exit=3", (MARKER, 3), id="marker-exit-3"),
        pytest.param(f"{MARKER} exit=255", (MARKER, 255), id="exit-255"),
        pytest.param("exit=3", ("exit=3", None), id="no-space-no-suffix"),
        pytest.param("x exit=1234", ("x exit=1234", None), id="four-digits-not-ours"),
        pytest.param("x exit=3 y", ("x exit=3 y", None), id="not-last-word"),
    ],
)
def test_split_exit_code(comment: str, expected: tuple[str, int | None]) -> None:
    assert split_exit_code(comment) == expected


@pytest.mark.parametrize(
    ("comment", "code", "expected"),
    [
        pytest.param(MARKER, 3, f"{MARKER} exit=3", id="append"),
        pytest.param(f"{MARKER} exit=3", 7, f"{MARKER} exit=7", id="replace"),
        pytest.param(None, 2, " exit=2", id="no-comment"),
    ],
)
def test_with_exit_code(comment: str | None, code: int, expected: str) -> None:
    assert with_exit_code(comment, code) == expected
    assert split_exit_code(expected)[1] == code


@pytest.mark.parametrize("code", [-1, 256])
def test_with_exit_code_refuses_codes_a_shell_cannot_exit_with(code: int) -> None:
    with pytest.raises(ValueError, match=r"not in 0\.\.255"):
        with_exit_code(MARKER, code)


@pytest.mark.parametrize(
    ("sig", "squeue_says", "exit_code"),
    [
        pytest.param(signal.SIGUSR1, f"{MARKER} exit=3", 0, id="usr1-completed"),
        pytest.param(signal.SIGUSR2, f"{MARKER} exit=3", 3, id="usr2-exit-3"),
        pytest.param(signal.SIGUSR2, f"{MARKER} exit=137", 137, id="usr2-exit-137"),
        pytest.param(signal.SIGUSR2, MARKER, 1, id="usr2-no-code-1"),
        pytest.param(signal.SIGUSR2, None, 1, id="usr2-squeue-fails-1"),
    ],
)
def test_placeholder_exits_with_the_code_in_its_comment(
    tmp_path: Path, sig: signal.Signals, squeue_says: str | None, exit_code: int
) -> None:
    fake = tmp_path / "squeue"  # stands in for `squeue -h -j ID -o %k` (the job's comment)
    fake.write_text("#!/bin/sh\n" + (f"echo '{squeue_says}'\n" if squeue_says is not None else "exit 1\n"))
    fake.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(placeholder_script(60))
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SLURM_JOB_ID": "7"}
    proc = subprocess.Popen(["/bin/sh", str(script)], env=env)
    try:
        time.sleep(0.3)  # let the shell install its traps
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=10) == exit_code
    finally:
        if proc.poll() is None:
            proc.kill()

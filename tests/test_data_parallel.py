"""examples/data_parallel.py: two processes over one global mesh train as one process
does, and a failing process ends the run with a message instead of a hang."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import common
import data_parallel

EXAMPLE = Path(data_parallel.__file__)
SUMMARY = re.compile(r"^test_accuracy=0\.\d{4} loss=\d+\.\d{4} steps=\d+ seconds=\d+\.\d$")


def test_two_processes_train_as_one_does(tmp_path):
    losses = tmp_path / "losses.npy"
    options = "--processes 2 --devices-per-process 2 --steps 4 --batch-size 64 --timeout 100"
    command = [sys.executable, str(EXAMPLE), *options.split(), "--losses", str(losses)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        one_device = Mesh(np.array(jax.devices()[:1]), ("data",))  # meanwhile, the reference
        expected, _ = data_parallel.train(
            common.load_data(), one_device, steps=4, batch_size=64, seed=0
        )
        try:
            stdout, stderr = run.communicate(timeout=120)
        finally:
            run.kill()
    assert run.returncode == 0, stderr[-2000:]
    assert SUMMARY.match(stdout.splitlines()[-1]), stdout
    np.testing.assert_allclose(np.load(losses), expected, rtol=1e-5)


def test_a_failing_process_stops_the_others(capsys):
    python = sys.executable
    commands = [[python, "-c", "import time; time.sleep(60)"], [python, "-c", "exit(3)"]]
    start = time.monotonic()
    assert data_parallel.supervise(commands, dict(os.environ), timeout=60) == 1
    assert time.monotonic() - start < 30  # the sleeper was stopped, not waited for
    err = capsys.readouterr().err
    assert re.search(r"^data_parallel: process 1 exited with code 3 \(its log: .*process1\.log\); "
                     r"stopped the other processes$", err, re.M), err  # fmt: skip


def test_a_run_past_its_time_is_stopped(capsys):
    commands = [[sys.executable, "-c", "import time; time.sleep(60)"]]
    assert data_parallel.supervise(commands, dict(os.environ), timeout=0.5) == 1
    assert "data_parallel: no result after 0.5 s" in capsys.readouterr().err

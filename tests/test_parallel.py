"""One code path from 1 device to many: jit vs pmap, 1 vs 8 devices.

Two processes (gloo) against one: tests/test_cli.py, through launch/multihost_local.sh.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from musicgen_jax import workdir as workdir_lib


RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parallel_run.py")


def _launch(*args):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen([sys.executable, RUNNER, *map(str, args)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(*procs, timeout=240):
  for proc in procs:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def _losses(workdir):
  return [json.loads(line)["train_loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _params(workdir):
  run = workdir_lib.load_run(str(workdir))
  assert run.step == 3
  return jax.tree.map(np.asarray, run.params)


def _assert_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6), a, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("parallel")
  dirs = {name: root / name for name in ("one", "jit8", "pmap8")}
  # Two processes at a time: this machine has two cores.
  _wait(_launch(1, f"{dirs['one']}:jit"),
        _launch(8, f"{dirs['jit8']}:jit", f"{dirs['pmap8']}:pmap"))
  return dirs


def test_one_and_eight_devices_agree(runs):
  np.testing.assert_allclose(_losses(runs["jit8"]), _losses(runs["one"]), rtol=1e-5)
  _assert_close(_params(runs["jit8"]), _params(runs["one"]))


def test_jit_and_pmap_agree(runs):
  np.testing.assert_allclose(_losses(runs["pmap8"]), _losses(runs["jit8"]), rtol=1e-5)
  _assert_close(_params(runs["pmap8"]), _params(runs["jit8"]))

"""Faults: SIGKILL at random points, damaged checkpoints; the run loses nothing."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from musicgen_jax import checkpoint as ckpt_lib
from musicgen_jax import train as train_lib
from musicgen_jax import workdir as workdir_lib
from toy import toy_config, toy_dataset

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parallel_run.py")
STEPS = 8


def _config():
  return toy_config(num_steps=STEPS, log_every=1, eval_every=0, checkpoint_every=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  train_lib.train_and_evaluate(_config(), workdir, dataset=toy_dataset())
  params = workdir_lib.load_run(workdir, step=STEPS).params
  return workdir, jax.tree.map(np.asarray, params)


def _final_params(workdir):
  run = workdir_lib.load_run(str(workdir), step=STEPS)
  params, step = run.params, run.step
  assert step == STEPS
  return jax.tree.map(np.asarray, params)


def _steps_on_disk(checkpoints):
  if not os.path.isdir(checkpoints):
    return [], False
  names = os.listdir(checkpoints)
  return sorted(int(n) for n in names if n.isdigit()), any("tmp" in n for n in names)


def test_sigkill_at_random_points_then_restart_matches(uninterrupted, tmp_path):
  _, expected = uninterrupted
  workdir = tmp_path / "killed"
  checkpoints = workdir / "checkpoints"
  cmd = [sys.executable, RUNNER, "1", f"{workdir}:jit", f"--num_steps={STEPS}",
         "--checkpoint_every=1", "--log_every=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  rng = random.Random(1234)
  # Kill points: while a checkpoint is being written (its tmp folder exists), right after
  # a checkpoint lands, and after a random delay.
  plans = ["during_save", "after_save", "random"]
  kills = []
  for plan in plans + ["finish"]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    before, _ = _steps_on_disk(checkpoints)
    deadline = time.time() + 120
    if plan == "random":
      time.sleep(rng.uniform(2.0, 8.0))
    while plan != "finish" and proc.poll() is None and time.time() < deadline:
      steps, saving = _steps_on_disk(checkpoints)
      if plan == "during_save" and saving:
        break
      if plan == "after_save" and len(steps) > len(before):
        break
      if plan == "random":
        break
      time.sleep(0.002)
    if plan != "finish" and proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills.append((plan, _steps_on_disk(checkpoints)))
    _, err = proc.communicate(timeout=180)
    if plan == "finish":
      assert proc.returncode == 0, err.decode()[-3000:]
  assert len(kills) >= 2, kills  # the run was really interrupted
  jax.tree.map(np.testing.assert_array_equal, _final_params(workdir), expected)


def _damage(step_dir, how):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  if how == "truncate":
    data = max((f for f in files if f"{os.sep}d{os.sep}" in f), key=os.path.getsize)
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
  elif how == "delete_metadata":
    os.remove(os.path.join(step_dir, "default", "_METADATA"))
  elif how == "delete_data":
    for f in files:
      if f"{os.sep}d{os.sep}" in f:
        os.remove(f)


@pytest.mark.parametrize("how", ["truncate", "delete_metadata", "delete_data"])
def test_damaged_latest_checkpoint_falls_back_to_newest_intact(uninterrupted, tmp_path, how,
                                                               caplog):
  source, expected = uninterrupted
  workdir = tmp_path / "w"
  shutil.copytree(source, workdir)
  for step in (7, 8):  # the latest two are damaged; 6 is intact
    _damage(workdir / "checkpoints" / str(step), how)
  with caplog.at_level("WARNING"):
    result = train_lib.train_and_evaluate(_config(), str(workdir), dataset=toy_dataset())
  warnings = " ".join(r.getMessage() for r in caplog.records)
  assert "checkpoint 8 in" in warnings and "is damaged" in warnings
  assert "checkpoint 7 in" in warnings
  assert result["step"] == STEPS
  jax.tree.map(np.testing.assert_array_equal, _final_params(workdir), expected)
  assert sorted(os.listdir(workdir / "damaged_checkpoints"))[0].startswith("7-")


def test_all_checkpoints_damaged_is_an_error_not_a_fresh_start(uninterrupted, tmp_path):
  source, _ = uninterrupted
  workdir = tmp_path / "w"
  shutil.copytree(source, workdir)
  for name in os.listdir(workdir / "checkpoints"):
    if name.isdigit():
      _damage(workdir / "checkpoints" / name, "delete_metadata")
  with pytest.raises(ckpt_lib.CheckpointError, match="every checkpoint .* is damaged"):
    train_lib.train_and_evaluate(_config(), str(workdir), dataset=toy_dataset())

"""Training loop: outputs in W, exact resume, non-finite loss, flags against config.json."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from musicgen_jax import checkpoint as ckpt_lib
from musicgen_jax import train as train_lib
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.config import RunConfig
from toy import toy_config, toy_dataset


def _params(workdir, config, step=None):
  run = workdir_lib.load_run(workdir, step=step)
  assert run.config.train == config.train
  return jax.tree.map(np.asarray, run.params), run.step


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  config = toy_config()
  result = train_lib.train_and_evaluate(config, workdir, dataset=toy_dataset())
  return workdir, config, result


def test_workdir_outputs(straight_run):
  workdir, config, result = straight_run
  assert result["step"] == 6 and np.isfinite(result["valid_nll"])
  stored = json.load(open(os.path.join(workdir, "config.json")))
  assert stored["model"]["model"] == "lstm" and stored["train"]["num_steps"] == 6
  stored_config = RunConfig.from_json(stored)
  # What was given, plus the pitch range the run trained on (recorded for sampling).
  assert stored_config.model.pitch_low > 0 and stored_config.model.pitch_high > 0
  assert stored_config.model == dataclasses.replace(
      config.model, pitch_low=stored_config.model.pitch_low,
      pitch_high=stored_config.model.pitch_high)
  assert (stored_config.data, stored_config.train) == (config.data, config.train)
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records] == [2, 3, 4, 6]
  for r in records:
    assert np.isfinite(r["train_loss"]) and r["frames_per_s"] > 0
  assert "valid_nll" in records[1] and "valid_nll" in records[-1]
  assert "valid_nll" not in records[0]
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit()) == [3, 6]


def test_training_lowers_the_loss(tmp_path):
  config = toy_config(num_steps=40, log_every=10, eval_every=0, checkpoint_every=40)
  train_lib.train_and_evaluate(config, str(tmp_path), dataset=toy_dataset())
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert records[-1]["train_loss"] < 0.7 * records[0]["train_loss"]


def test_resume_ends_exactly_where_uninterrupted_run_ends(straight_run, tmp_path):
  workdir, config, _ = straight_run
  expected, _ = _params(workdir, config)
  # Simulate a run killed after its step-3 checkpoint: drop the later checkpoint.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
  result = train_lib.train_and_evaluate(config, resumed, dataset=toy_dataset())
  assert result["step"] == 6
  got, step = _params(resumed, config, step=6)
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  steps = [json.loads(line)["step"] for line in open(os.path.join(resumed, "metrics.jsonl"))]
  assert steps == [2, 3, 4, 6]  # no duplicated records after the resume point


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(straight_run, tmp_path):
  source, config, _ = straight_run
  workdir = str(tmp_path / "w")
  shutil.copytree(source, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))  # as if stopped after step 3
  good, _ = _params(workdir, config)
  dataset = toy_dataset()
  for piece in dataset["train"]:
    piece.frames[:, 106] = np.nan
  with pytest.raises(train_lib.NonFiniteLossError, match="at step 4"):
    train_lib.train_and_evaluate(config, workdir, dataset=dataset)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  assert checkpointer.all_steps() == [3]
  after, _ = _params(workdir, config)
  jax.tree.map(np.testing.assert_array_equal, after, good)


def test_unwritable_workdir_is_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with pytest.raises(ValueError, match="cannot write to --workdir="):
    train_lib.train_and_evaluate(toy_config(), str(blocker / "w"), dataset=toy_dataset())


def test_batch_must_divide_over_devices(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 3)
  with pytest.raises(ValueError, match="does not divide over 3 devices"):
    train_lib.train_and_evaluate(toy_config(), str(tmp_path), dataset=toy_dataset())


def _cli(*args, cwd=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "musicgen_jax.train", *args],
                        capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_cli_rejects_flags_that_contradict_config(straight_run):
  workdir, _, _ = straight_run
  proc = _cli(f"--workdir={workdir}", "--model=rnn", "--hidden_size=32",
              "--cache_dir=/elsewhere")
  assert proc.returncode != 0
  assert "--model=rnn (the run has lstm)" in proc.stderr
  assert "--hidden_size=32" in proc.stderr
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1 and "--cache_dir" not in error[0]  # where data is cached is no conflict
  assert "Traceback" not in proc.stderr


def test_cli_one_line_errors(tmp_path):
  proc = _cli(f"--workdir={tmp_path}/w", "--seq_len=1")
  assert proc.returncode != 0 and "seq_len must be at least 2" in proc.stderr
  proc = _cli(f"--workdir={tmp_path}/w", "--dataset=midi_dir", f"--data_dir={tmp_path}")
  assert proc.returncode != 0 and "no .mid/.midi files" in proc.stderr.lower()
  assert "Traceback" not in proc.stderr

"""Workdirs written before the config/run restructure still load, score, sample and resume.

tests/fixtures/legacy_* were written by the code of commit 4d93ea4 (see
fixtures/make_legacy.py), with what that code computed from them in expected.json.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from musicgen_jax import evaluate, generate, sampling, train
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.config import RunConfig
from toy import toy_dataset

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_legacy_workdir_scores_and_samples_as_before(model):
  workdir = os.path.join(FIXTURES, f"legacy_{model}")
  expected = json.load(open(os.path.join(workdir, "expected.json")))
  run = workdir_lib.load_run(workdir)
  assert run.step == expected["step"] and run.config.model.model == model
  dataset = toy_dataset()
  pieces = [p.frames[:9] for p in dataset["test"]]
  result = evaluate.evaluate_pieces(run.config.model, run.params, pieces)
  for key in ("nll", "nll_notes", "nll_duration"):
    assert result[key] == pytest.approx(expected["eval"][key], rel=1e-5), key
  assert result["num_frames"] == expected["eval"]["num_frames"]
  frames, _ = generate.sample_frames(run.config.model, run.params,
                                     dataset["test"][0].frames[:4],
                                     sampling.SampleSettings(num_frames=12), 2, 0)
  want = np.asarray(expected["sample_frames"], np.float32)
  # The same draws from the same distributions: at most a draw on its threshold may flip.
  assert np.sum(frames != want) <= 2


def test_legacy_config_reads_with_current_defaults():
  config = RunConfig.load(os.path.join(FIXTURES, "legacy_lstm"))
  assert config.model.note_head == "independent"  # a setting added since
  assert config.train.carry_state is False and config.train.patience == 0


def test_legacy_workdir_resumes_training(tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(os.path.join(FIXTURES, "legacy_lstm"), workdir)
  config = RunConfig.load(workdir)
  config = RunConfig(model=config.model, data=config.data,
                     train=config.train.__class__(**dict(config.train.to_dict(), num_steps=6)))
  before = jax.tree.map(np.asarray, workdir_lib.load_run(workdir, step=4).params)
  result = train.train_and_evaluate(config, workdir, dataset=toy_dataset())
  assert result["step"] == 6
  after = workdir_lib.load_run(workdir, step=6)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after.params)
  assert any(jax.tree.leaves(changed))
  steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert steps == sorted(steps) and steps[-1] == 6

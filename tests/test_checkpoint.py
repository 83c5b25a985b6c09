"""Checkpoints: the latest few and the best by validation NLL, across restarts."""

import numpy as np
import pytest

from musicgen_jax import checkpoint as ckpt_lib


def test_keeps_latest_and_best_and_remembers_best_after_reopening(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), keep=2)
  for step, nll in [(1, 5.0), (2, 3.0), (3, 4.0), (4, 6.0), (5, None)]:
    checkpointer.save(step, {"w": np.full(3, float(step), np.float32)}, valid_nll=nll)
  assert checkpointer.all_steps() == [2, 4, 5]  # the latest two, and the best (2)
  assert checkpointer.best_step() == 2
  checkpointer.close()
  reader = ckpt_lib.Checkpointer(str(tmp_path), keep=2, read_only=True)
  assert reader.best_step() == 2
  state, step = reader.restore({"w": np.zeros(3, np.float32)}, step=reader.best_step())
  assert step == 2
  np.testing.assert_array_equal(np.asarray(state["w"]), [2.0, 2.0, 2.0])


def test_without_validation_best_is_latest(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), keep=3)
  for step in (1, 2):
    checkpointer.save(step, {"w": np.zeros(2, np.float32)})
  assert checkpointer.best_step() == 2


def test_non_finite_state_is_never_written(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), keep=3)
  checkpointer.save(1, {"w": np.ones(2, np.float32)})
  with pytest.raises(ckpt_lib.CheckpointError, match="non-finite"):
    checkpointer.save(2, {"w": np.array([1.0, np.nan], np.float32)})
  assert checkpointer.all_steps() == [1]

"""Tiny synthetic datasets and configs shared by the training tests."""

import numpy as np

from musicgen_jax.data import STUDY_FRAME, DataConfig, Dataset, Piece
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM
from musicgen_jax.models import ModelConfig
from musicgen_jax.config import RunConfig, TrainConfig


# The toy pieces are the study's 107-dim frame (no note lengths, no metre columns).


def toy_frames(seed: int, length: int) -> np.ndarray:
  """A learnable piece: an arpeggio pattern with some random notes."""
  rng = np.random.default_rng(seed)
  frames = np.zeros((length, FRAME_DIM), np.float32)
  pattern = [39, 43, 46, 51]
  for t in range(length):
    frames[t, pattern[t % 4] + rng.integers(0, 3)] = 1.0
    if rng.random() < 0.2:
      frames[t, rng.integers(20, 60)] = 1.0
    frames[t, DURATION_INDEX] = (1 + (t % 2)) / 4
  return frames


def toy_dataset(num_train=6, length=40) -> Dataset:
  pieces = {
      "train": [Piece(f"train/{i}", toy_frames(i, length + i)) for i in range(num_train)],
      "valid": [Piece("valid/0", toy_frames(100, length))],
      "test": [Piece("test/0", toy_frames(200, length)), Piece("test/1", toy_frames(201, 17))],
  }
  return Dataset(splits=pieces, skipped=[], summary={},
                 config=DataConfig(cache_dir="/nonexistent", **STUDY_FRAME))


def toy_config(model="lstm", **train) -> RunConfig:
  settings = dict(batch_size=8, num_steps=6, warmup_steps=2, log_every=2, eval_every=3,
                  checkpoint_every=3, learning_rate=1e-2)
  settings.update(train)
  return RunConfig(
      model=ModelConfig(model=model, hidden_size=16, num_layers=1, num_heads=2, seq_len=8,
                        max_duration_steps=24, note_head="independent"),
      data=DataConfig(cache_dir="/nonexistent", **STUDY_FRAME),
      train=TrainConfig(**settings))

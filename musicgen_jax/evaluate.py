"""The evaluation protocol, one implementation for every model, and its CLI.

For each held-out piece every frame except the first is predicted from the
frames before it:
  rnn, lstm     the recurrent state runs over the whole piece;
  transformer   each prediction sees at most the `seq_len` frames before it
                (a strict sliding window: its trained context);
  bilstm        each prediction reads the (up to) `seq_len` frames before it.
Every predicted frame is scored by `losses.frame_terms`, summed over the split
and divided by the number of predicted frames (frame-weighted).

    python -m musicgen_jax.evaluate --workdir=W --split=test
    python -m musicgen_jax.evaluate --workdir=W --split=test --samples=O

With --samples, the MIDI files in O (e.g. what `musicgen_jax.sample` wrote) are
compared with the split by `music_stats.compare_midi_dir` (music statistics and
the overlap of intra-/inter-set distance distributions), under "music_stats".
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags, logging

from musicgen_jax import losses
from musicgen_jax.encoding import FRAME_DIM
from musicgen_jax.models import ModelConfig, apply_model

METRIC_KEYS = ("nll", "nll_notes", "nll_duration", "tp", "fp", "fn", "count")
MIN_BUCKET = 64  # shortest padded piece length (whole-piece models)


def _frames_of(piece) -> np.ndarray:
  frames = piece.frames if hasattr(piece, "frames") else piece
  frames = np.asarray(frames, np.float32)
  if frames.ndim != 2 or frames.shape[1] != FRAME_DIM:
    raise ValueError(f"a piece must be [T, {FRAME_DIM}], got {frames.shape}")
  return frames


@functools.lru_cache(maxsize=None)
def _scorer(cfg: ModelConfig, with_lengths: bool):
  """jit(params, inputs, targets, mask[, lengths]) -> metric sums."""

  def score(params, inputs, targets, mask, lengths=None):
    pred = apply_model(cfg, params, inputs, lengths=lengths)
    _, sums = losses.loss_and_metrics(pred, targets, mask, cfg)
    return sums

  if with_lengths:
    return jax.jit(score)
  return jax.jit(lambda params, inputs, targets, mask: score(params, inputs, targets, mask))


def _add(total: dict, sums) -> None:
  for k in METRIC_KEYS:
    total[k] += float(sums[k])


def _whole_pieces(cfg, params, pieces, batch_size, total):
  """rnn/lstm: one pass over each piece, pieces padded to power-of-two buckets."""
  score = _scorer(cfg, False)
  order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
  buckets: dict[int, list[np.ndarray]] = {}
  for i in order:
    length = len(pieces[i]) - 1
    bucket = max(MIN_BUCKET, 1 << math.ceil(math.log2(max(length, 1))))
    buckets.setdefault(bucket, []).append(pieces[i])
  for bucket, group in buckets.items():
    for start in range(0, len(group), batch_size):
      chunk = group[start:start + batch_size]
      inputs = np.zeros((batch_size, bucket, FRAME_DIM), np.float32)
      targets = np.zeros_like(inputs)
      mask = np.zeros((batch_size, bucket), np.float32)
      for row, frames in enumerate(chunk):
        n = len(frames) - 1
        inputs[row, :n] = frames[:-1]
        targets[row, :n] = frames[1:]
        mask[row, :n] = 1.0
      _add(total, score(params, inputs, targets, mask))


def _windows(cfg, params, pieces, batch_size, total):
  """transformer: every target sees at most the seq_len frames before it, exactly.

  The first window of a piece (frames 0 .. seq_len - 1) scores all of its
  outputs, whose contexts all start at frame 0; every later target t is scored
  from its own window t - seq_len .. t - 1. (With several layers, one pass over
  a long piece would let information reach further back than seq_len frames
  through the per-layer banded attention, beyond what training ever showed.)
  """
  score = _scorer(cfg, False)
  width = cfg.seq_len
  rows = []  # (piece index, window start, first scored output index in window)
  for index, frames in enumerate(pieces):
    n = len(frames) - 1  # predicted frames: targets 1..n
    rows.append((index, 0, 0))
    rows.extend((index, t - width, width - 1) for t in range(width + 1, n + 1))
  for start in range(0, len(rows), batch_size):
    block = rows[start:start + batch_size]
    inputs = np.zeros((batch_size, width, FRAME_DIM), np.float32)
    targets = np.zeros_like(inputs)
    mask = np.zeros((batch_size, width), np.float32)
    for row, (index, s, first) in enumerate(block):
      frames = pieces[index]
      e = min(s + width, len(frames) - 1)
      inputs[row, :e - s] = frames[s:e]
      targets[row, :e - s] = frames[s + 1:e + 1]
      mask[row, first:e - s] = 1.0
    _add(total, score(params, inputs, targets, mask))


def _preceding_windows(cfg, params, pieces, batch_size, total):
  """bilstm: each target t reads frames max(0, t - seq_len) .. t - 1 (right padded)."""
  score = _scorer(cfg, True)
  seq_len = cfg.seq_len
  targets_index = [(i, t) for i, frames in enumerate(pieces) for t in range(1, len(frames))]
  for start in range(0, len(targets_index), batch_size):
    block = targets_index[start:start + batch_size]
    inputs = np.zeros((batch_size, seq_len, FRAME_DIM), np.float32)
    targets = np.zeros((batch_size, 1, FRAME_DIM), np.float32)
    mask = np.zeros((batch_size, 1), np.float32)
    lengths = np.ones((batch_size,), np.int32)
    for row, (i, t) in enumerate(block):
      frames = pieces[i]
      s = max(0, t - seq_len)
      inputs[row, :t - s] = frames[s:t]
      lengths[row] = t - s
      targets[row, 0] = frames[t]
      mask[row, 0] = 1.0
    _add(total, score(params, inputs, targets, mask, lengths))


def evaluate_pieces(cfg: ModelConfig, params, pieces: Sequence, *,
                    batch_size: int = 16) -> dict:
  """Scores every frame but the first of each piece; frame-weighted totals.

  Args:
    cfg: the model config.
    params: model parameters (host or replicated device arrays).
    pieces: Pieces (with .frames) or arrays float32[T, 107].
    batch_size: pieces (or windows) per compiled call.

  Returns:
    {'nll', 'nll_notes', 'nll_duration' (nats per predicted frame),
     'note_accuracy' (TP / (TP + FP + FN) at 0.5), 'num_frames'}.
  """
  frames = [_frames_of(p) for p in pieces]
  frames = [f for f in frames if len(f) >= 2]
  if not frames:
    raise ValueError("nothing to evaluate: no piece has two or more frames")
  total = {k: 0.0 for k in METRIC_KEYS}
  if cfg.model == "bilstm":
    _preceding_windows(cfg, params, frames, batch_size * 16, total)
  elif cfg.model == "transformer":
    _windows(cfg, params, frames, batch_size * 16, total)
  else:
    _whole_pieces(cfg, params, frames, batch_size, total)
  count = total["count"]
  hits = total["tp"] + total["fp"] + total["fn"]
  return {
      "nll": total["nll"] / count,
      "nll_notes": total["nll_notes"] / count,
      "nll_duration": total["nll_duration"] / count,
      "note_accuracy": total["tp"] / hits if hits else 0.0,
      "num_frames": int(round(count)),
  }


# The command line ----------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir holding config.json and checkpoints/.")
  flags.DEFINE_enum("split", "test", ["train", "valid", "test"], "Which split to score.")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the best by "
                       "validation NLL, else the latest).")
  flags.DEFINE_integer("eval_batch_size", 16, "Pieces per compiled evaluation call.")
  flags.DEFINE_string("samples", None, "Folder of generated MIDI files (e.g. the sampler's "
                      "--out_dir): adds their music statistics against the split's, and "
                      "the per-feature overlap, to the JSON as 'music_stats'.")


def evaluate_workdir(workdir: str, split: str = "test", step: int | None = None,
                     batch_size: int = 16, samples_dir: str | None = None) -> dict:
  """Loads W's config and checkpoint, scores `split`, writes W/eval_<split>.json.

  With samples_dir, also compares the MIDI files there with the split's pieces
  (`music_stats.compare_midi_dir`) and adds the report as result['music_stats'].
  """
  from musicgen_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top

  if samples_dir and not os.path.isdir(samples_dir):
    raise FileNotFoundError(f"--samples={samples_dir} is not a folder; point it at the folder "
                            "the sampler wrote")
  config = train_lib.load_run_config(workdir)
  params, restored_step = train_lib.load_params(workdir, config, step=step)
  dataset = load_dataset(config.data)
  pieces = dataset[split]
  if not pieces:
    raise ValueError(f"the {split} split of {config.data.dataset} is empty; "
                     "choose another --split or change the split fractions")
  start = time.perf_counter()
  result = evaluate_pieces(config.model, params, pieces, batch_size=batch_size)
  result.update({"split": split, "step": restored_step, "num_pieces": len(pieces),
                 "model": config.model.model, "seconds": round(time.perf_counter() - start, 3)})
  if samples_dir:
    from musicgen_jax import music_stats  # pylint: disable=g-import-not-at-top
    result["music_stats"] = music_stats.compare_midi_dir(
        samples_dir, pieces, steps_per_quarter=config.data.steps_per_quarter,
        duration_mode=config.data.duration_mode,
        max_duration_steps=config.model.max_duration_steps)
  if jax.process_index() == 0:
    path = os.path.join(workdir, f"eval_{split}.json")
    with open(path + ".tmp", "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
    os.replace(path + ".tmp", path)
  return result


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (the folder a training run wrote)")
  try:
    result = evaluate_workdir(FLAGS.workdir, FLAGS.split, FLAGS.step, FLAGS.eval_batch_size,
                              samples_dir=FLAGS.samples)
  except (ValueError, OSError, RuntimeError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")
  print(json.dumps(result))


def run():
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()

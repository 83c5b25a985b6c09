"""The evaluation protocol, one implementation for every model, and its CLI.

For each held-out piece every frame except the first is predicted from the frames before
it, with the context the model defines for itself (`models.context`):

  state   (rnn, lstm)   the recurrent state runs over the whole piece;
  field   (transformer) every prediction sees its whole receptive field (each layer
                        attends to the last seq_len positions), exactly as when sampling;
  window  (bilstm)      each prediction reads the (up to) seq_len frames before it.

Pieces are scored in chunks of at most `chunk` frames per row (the state carried from
chunk to chunk, or each chunk preceded by the receptive field it needs), so memory is
bounded by rows x chunk, never by a piece's length. Every predicted frame is scored by
`losses.frame_terms`, summed over the split and divided by the number of predicted frames
(frame-weighted).

    python -m musicgen_jax.evaluate --workdir=W --split=test [--samples=O]

With --samples, the MIDI files in O (e.g. what `musicgen_jax.sample` wrote) are compared
with the split by `music_stats.compare_midi_dir` (music statistics and the overlap of
intra-/inter-set distance distributions), under "music_stats", and beside it by the judge
(`musicgen_jax.judge`, a classifier two-sample test: 0.5 = cannot tell them apart), under
"judge".
"""

from __future__ import annotations

import collections
import functools
import json
import os
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import flags, logging

from musicgen_jax import cli, losses, models
from musicgen_jax.encoding import frame_layout
from musicgen_jax.models import FIELD, STATE, ModelConfig, apply_model

METRIC_KEYS = losses.METRIC_NAMES + ("count",)
CHUNK = 512  # frames per row and compiled call
MIN_CHUNK = 64  # shortest padded row (fewer shapes to compile for short pieces)
WINDOW_ROWS_PER_PIECE_ROW = 16  # windowed models: windows per compiled call / batch_size


def _frames_of(piece, dense: "_DenseCache"):
  """The piece's frames: an array, or for a piece held sparse a view made dense when sliced
  (so a split is never all dense at once)."""
  if getattr(piece, "sparse", None) is not None:
    return _SparseView(piece, dense)
  frames = np.asarray(getattr(piece, "frames", piece), np.float32)
  frame_layout(frames, "a piece")
  return frames


class _DenseCache:
  """The last few pieces made dense (the scorers read each piece a chunk at a time)."""

  def __init__(self, size: int):
    self.size, self._items = size, collections.OrderedDict()

  def get(self, piece) -> np.ndarray:
    key = id(piece)
    if key in self._items:
      self._items.move_to_end(key)
    else:
      self._items[key] = piece.frames
      while len(self._items) > self.size:
        self._items.popitem(last=False)
    return self._items[key]


class _SparseView:
  """float32[T, F] of a sparse piece, as far as the scorers use an array: len, shape, slices."""

  def __init__(self, piece, dense: _DenseCache):
    self._piece, self._dense = piece, dense
    self.shape = (piece.num_frames, piece.sparse[0].width)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, key):
    return self._dense.get(self._piece)[key]


def _padded_length(length: int, chunk: int) -> int:
  """Rows shorter than a chunk are padded to a power of two (few compiled shapes)."""
  if length >= chunk:
    return chunk
  return max(MIN_CHUNK, 1 << int(np.ceil(np.log2(max(length, 1)))))


@functools.lru_cache(maxsize=None)
def _scorer(cfg: ModelConfig, with_carry: bool, with_lengths: bool):
  """jit(params, inputs, targets, mask[, lengths][, carry]) -> sums[, carry]."""

  def score(params, inputs, targets, mask, lengths=None, carry=None):
    out = apply_model(cfg, params, inputs, lengths=lengths, carry=carry)
    pred, carry = out if carry is not None else (out, None)
    _, sums = losses.loss_and_metrics(pred, targets, mask)
    return (sums, carry) if carry is not None else sums

  if with_carry:
    return jax.jit(lambda p, x, y, m, carry: score(p, x, y, m, carry=carry))
  if with_lengths:
    return jax.jit(lambda p, x, y, m, lengths: score(p, x, y, m, lengths=lengths))
  return jax.jit(lambda p, x, y, m: score(p, x, y, m))


class _Totals:
  def __init__(self):
    self.sums = {k: 0.0 for k in METRIC_KEYS}

  def add(self, sums) -> None:
    sums = jax.device_get(sums)
    for k in METRIC_KEYS:
      self.sums[k] += float(sums[k])


def _rows(batch: int, width: int, features: int):
  inputs = np.zeros((batch, width, features), np.float32)
  return inputs, np.zeros_like(inputs), np.zeros((batch, width), np.float32)


def _score_with_state(cfg, params, pieces, rows_per_call, chunk, totals):
  """Recurrent models: groups of pieces, chunk by chunk, the state carried between chunks."""
  score = _scorer(cfg, True, False)
  order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
  for start in range(0, len(order), rows_per_call):
    group = [pieces[i] for i in order[start:start + rows_per_call]]
    longest = max(len(f) - 1 for f in group)
    width = _padded_length(longest, chunk)
    carry = models.init_carry(cfg, rows_per_call)
    for offset in range(0, longest, width):
      inputs, targets, mask = _rows(rows_per_call, width, group[0].shape[-1])
      for row, frames in enumerate(group):
        end = min(offset + width, len(frames) - 1)
        if end > offset:
          inputs[row, :end - offset] = frames[offset:end]
          targets[row, :end - offset] = frames[offset + 1:end + 1]
          mask[row, :end - offset] = 1.0
      sums, carry = score(params, inputs, targets, mask, carry)
      totals.add(sums)


def _score_with_field(cfg, params, pieces, rows_per_call, chunk, field, totals):
  """Finite receptive field: each chunk of targets is read with the field before it."""
  score = _scorer(cfg, False, False)
  width_max = field - 1 + chunk
  segments = []  # (piece, first input, first scored input, end input)
  for index, frames in enumerate(pieces):
    n = len(frames) - 1  # inputs 0..n-1 predict frames 1..n
    for a in range(0, n, chunk):
      segments.append((index, max(0, a - field + 1), a, min(a + chunk, n)))
  segments.sort(key=lambda s: s[3] - s[1])
  for start in range(0, len(segments), rows_per_call):
    block = segments[start:start + rows_per_call]
    width = min(width_max, _padded_length(max(e - c for _, c, _, e in block), width_max))
    inputs, targets, mask = _rows(rows_per_call, width, pieces[0].shape[-1])
    for row, (index, c, a, e) in enumerate(block):
      frames = pieces[index]
      inputs[row, :e - c] = frames[c:e]
      targets[row, :e - c] = frames[c + 1:e + 1]
      mask[row, a - c:e - c] = 1.0
    totals.add(score(params, inputs, targets, mask))


def _score_windows(cfg, params, pieces, rows_per_call, window, totals):
  """Windowed models: each target t reads frames max(0, t - window) .. t - 1."""
  score = _scorer(cfg, False, True)
  targets_index = [(i, t) for i, frames in enumerate(pieces) for t in range(1, len(frames))]
  for start in range(0, len(targets_index), rows_per_call):
    block = targets_index[start:start + rows_per_call]
    features = pieces[0].shape[-1]
    inputs = np.zeros((rows_per_call, window, features), np.float32)
    targets = np.zeros((rows_per_call, 1, features), np.float32)
    mask = np.zeros((rows_per_call, 1), np.float32)
    lengths = np.ones((rows_per_call,), np.int32)
    for row, (i, t) in enumerate(block):
      s = max(0, t - window)
      inputs[row, :t - s] = pieces[i][s:t]
      lengths[row] = t - s
      targets[row, 0] = pieces[i][t]
      mask[row, 0] = 1.0
    totals.add(score(params, inputs, targets, mask, lengths))


def evaluate_pieces(cfg: ModelConfig, params, pieces: Sequence, *, batch_size: int = 16,
                    chunk: int = CHUNK) -> dict:
  """Scores every frame but the first of each piece; frame-weighted totals.

  Args:
    cfg: the model config.
    params: model parameters (host or replicated device arrays).
    pieces: Pieces (with .frames) or arrays float32[T, F] of the model's layout.
    batch_size: rows per compiled call (pieces, or chunks of pieces).
    chunk: frames per row and call; memory is bounded by batch_size x chunk.

  Returns:
    {'nll', 'nll_notes', 'nll_notes_88' (the 88 piano keys' terms, as the polyphonic-music
     benchmarks count), 'nll_duration', 'nll_velocity' (frames with dynamics; 0
     otherwise), 'nll_length' (frames with note lengths: their notes' lengths; 0
     otherwise), 'nll_total' (nll + nll_velocity + nll_length), all nats per predicted frame;
     'note_accuracy' (TP / (TP + FP + FN) at 0.5), 'num_frames'}.
  """
  if batch_size < 1 or chunk < 1:
    raise ValueError(f"--eval_batch_size and the chunk must be positive, got {batch_size} "
                     f"and {chunk}")
  dense = _DenseCache(2 * batch_size)  # a group of the recurrent scorer, and more
  frames = [f for f in (_frames_of(p, dense) for p in pieces) if len(f) >= 2]
  if not frames:
    raise ValueError("nothing to evaluate: no piece has two or more frames")
  totals = _Totals()
  context = models.context(cfg)
  if context.kind == STATE:
    _score_with_state(cfg, params, frames, batch_size, chunk, totals)
  elif context.kind == FIELD:
    _score_with_field(cfg, params, frames, batch_size, chunk, context.frames, totals)
  else:
    _score_windows(cfg, params, frames, batch_size * WINDOW_ROWS_PER_PIECE_ROW, context.frames,
                   totals)
  total = totals.sums
  count = total["count"]
  hits = total["tp"] + total["fp"] + total["fn"]
  return {
      "nll": total["nll"] / count,
      "nll_notes": total["nll_notes"] / count,
      "nll_notes_88": total["nll_notes_88"] / count,
      "nll_duration": total["nll_duration"] / count,
      "nll_velocity": total["nll_velocity"] / count,
      "nll_length": total["nll_length"] / count,
      "nll_total": total["nll_total"] / count,
      "note_accuracy": total["tp"] / hits if hits else 0.0,
      "num_frames": int(round(count)),
  }


def evaluate_workdir(workdir: str, split: str = "test", step: int | None = None,
                     batch_size: int = 16, samples_dir: str | None = None) -> dict:
  """Scores `split` with W's best (or `step`'s) parameters.

  With samples_dir, also compares the MIDI files there with the split's pieces
  (`music_stats.compare_midi_dir`) and adds the report as result['music_stats'].
  """
  from musicgen_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top

  if samples_dir and not os.path.isdir(samples_dir):
    raise FileNotFoundError(f"--samples={samples_dir} is not a folder; point it at the folder "
                            "the sampler wrote")
  run = workdir_lib.load_run(workdir, step)
  config = run.config
  pieces = load_dataset(config.data)[split]
  if not pieces:
    raise ValueError(f"the {split} split of {config.data.dataset} is empty; "
                     "choose another --split or change the split fractions")
  start = time.perf_counter()
  result = evaluate_pieces(config.model, run.params, pieces, batch_size=batch_size)
  result.update({"split": split, "step": run.step, "num_pieces": len(pieces),
                 "model": config.model.model, "seconds": round(time.perf_counter() - start, 3)})
  if samples_dir:
    from musicgen_jax import music_stats  # pylint: disable=g-import-not-at-top
    result["music_stats"] = music_stats.compare_midi_dir(
        samples_dir, pieces, steps_per_quarter=config.data.steps_per_quarter,
        duration_mode=config.data.duration_mode,
        max_duration_steps=config.model.max_duration_steps)
    result["judge"] = judge_midi_dir(samples_dir, config.data, pieces)
  return result


def judge_midi_dir(samples_dir: str, data_config, pieces) -> dict:
  """The judge (`musicgen_jax.judge`) of the MIDI files in samples_dir, read with the run's
  data settings, against the pieces, in excerpts as long as the median sample (at most the
  judge's default); {'error': why} where it cannot run (no scikit-learn, too little music)."""
  from musicgen_jax import judge  # pylint: disable=g-import-not-at-top
  try:
    judge.require_sklearn()
    generated = judge.read_midi_folder(samples_dir, data_config=data_config)
    length = judge.excerpt_length(int(np.median([len(g) for g in generated])))
    result = judge.judge(generated, pieces, length=length,
                         steps_per_quarter=data_config.steps_per_quarter)
  except (ImportError, ValueError) as e:
    return {"error": str(e)}
  return dict(result, reference=f"{len(pieces)} pieces of the split")


def write_result(workdir: str, split: str, result: dict) -> str:
  """Writes W/eval_<split>.json atomically (process 0); returns its path."""
  path = os.path.join(workdir, f"eval_{split}.json")
  if jax.process_index() == 0:
    with open(path + ".tmp", "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
    os.replace(path + ".tmp", path)
  return path


# The command line ----------------------------------------------------------------------


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("workdir", None, "Training workdir holding config.json and checkpoints/.",
                      flag_values=flag_values)
  flags.DEFINE_enum("split", "test", ["train", "valid", "test"], "Which split to score.",
                    flag_values=flag_values)
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the best by "
                       "validation NLL, else the latest).", flag_values=flag_values)
  flags.DEFINE_integer("eval_batch_size", 16, "Rows (pieces or chunks of pieces) per compiled "
                       "evaluation call; memory grows with it.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_string("samples", None, "Folder of generated MIDI files (e.g. the sampler's "
                      "--out_dir): adds their music statistics against the split's, and "
                      "the per-feature overlap, to the JSON as 'music_stats', and "
                      "beside it the judge (can a classifier tell them from the split's "
                      "music?) as 'judge'.",
                      flag_values=flag_values)


def main(flag_values: flags.FlagValues) -> None:
  cli.require(flag_values, "workdir")
  result = evaluate_workdir(flag_values.workdir, flag_values.split, flag_values.step,
                            flag_values.eval_batch_size, samples_dir=flag_values.samples)
  print(json.dumps(result), flush=True)  # the result first: it survives a failed write
  try:
    path = write_result(flag_values.workdir, flag_values.split, result)
  except OSError as e:
    raise cli.Failure(f"cannot write eval_{flag_values.split}.json in --workdir="
                      f"{flag_values.workdir} ({e.strerror or e}); the result is printed "
                      "above") from e
  logging.info("wrote %s", path)


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()

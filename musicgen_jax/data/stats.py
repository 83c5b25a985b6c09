"""Statistics of encoded pieces: sizes, pitch range, polyphony, rests, durations."""

from collections.abc import Sequence

import numpy as np

from musicgen_jax import encoding
from musicgen_jax.data import sparse as sparse_lib

# Duration histogram bins in quarter notes: (edge_low, edge_high] except the
# first, which includes 0.
DURATION_BIN_EDGES = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, np.inf)
DURATION_BIN_LABELS = ("<= 1/8", "1/8 - 1/4", "1/4 - 1/2", "1/2 - 1", "1 - 2",
                       "2 - 4", "> 4")


_CHUNK_FRAMES = 1 << 22  # frames of a sparse store read at a time


class _Tally:
  """Counts that add up over pieces or chunks of frames (durations as exact value counts:
  they lie on the quantisation grid, so the median needs no list of every frame)."""

  def __init__(self):
    self.lengths = []
    self.pitch_counts = np.zeros(encoding.NUM_NOTES, np.int64)
    self.num_notes = self.non_empty = 0
    self.duration_sum = 0.0
    self.durations = {}  # value -> frames

  def add(self, notes_per_frame: np.ndarray, pitch_counts: np.ndarray, durations: np.ndarray):
    self.pitch_counts += pitch_counts
    self.num_notes += int(notes_per_frame.sum())
    self.non_empty += int((notes_per_frame > 0).sum())
    durations = np.asarray(durations).astype(np.float64)
    self.duration_sum += float(durations.sum())
    values, counts = np.unique(durations, return_counts=True)
    for v, c in zip(values.tolist(), counts.tolist()):
      self.durations[v] = self.durations.get(v, 0) + c

  def add_dense(self, frames: np.ndarray):
    notes = frames[:, :encoding.NUM_NOTES] > 0
    self.lengths.append(frames.shape[0])
    self.add(notes.sum(axis=1), notes.sum(axis=0), frames[:, encoding.DURATION_INDEX])

  def add_store(self, store):
    """Every piece of a `SparseFrames`, read from its arrays a chunk at a time."""
    self.lengths.extend(store.lengths_of_pieces().tolist())
    for lo in range(0, store.num_frames, _CHUNK_FRAMES):
      hi = min(lo + _CHUNK_FRAMES, store.num_frames)
      starts = np.asarray(store.note_start[lo:hi + 1])
      pitches = np.asarray(store.pitches[starts[0]:starts[-1]])
      self.add(np.diff(starts), np.bincount(pitches, minlength=encoding.NUM_NOTES)
               [:encoding.NUM_NOTES], np.asarray(store.scalars[lo:hi])[:, 0])


def _duration_summary(tally: _Tally) -> dict:
  values = np.array(sorted(tally.durations), np.float64)
  counts = np.array([tally.durations[v] for v in values], np.int64)
  total = int(counts.sum())
  if not total:
    return {"mean": None, "median": None, "max": None}
  ends = np.cumsum(counts)
  at = lambda k: float(values[np.searchsorted(ends, k, side="right")])  # k-th, from 0
  median = at(total // 2) if total % 2 else (at(total // 2 - 1) + at(total // 2)) / 2
  return {"mean": tally.duration_sum / total, "median": median, "max": float(values[-1])}


def _duration_histogram(tally: _Tally) -> np.ndarray:
  """Counts per bin, each bin (low, high] except the first, which includes 0."""
  counts = np.zeros(len(DURATION_BIN_LABELS), np.int64)
  edges = np.array(DURATION_BIN_EDGES[1:-1])
  for value, count in tally.durations.items():
    counts[int(np.searchsorted(edges, value, side="left"))] += count
  return counts


def dataset_statistics(pieces: Sequence) -> dict:
  """Statistics of pieces (Pieces with .frames, or <float32>[T, F] arrays); pieces held
  sparse (a loaded dataset's splits, whole stores or shards) are read from their stores
  without making them dense.

  Returns:
    A JSON-ready dict: num_pieces, num_frames, num_notes, num_empty_frames,
    frames_per_piece {min, median, max}, pitch_min / pitch_max (MIDI numbers,
    None without notes), mean_polyphony (notes per non-empty frame), rest_rate
    (empty frames / frames), duration {mean, median, max} in quarter notes and
    duration_histogram [[label, count], ...] (see DURATION_BIN_LABELS).
  """
  tally = _Tally()
  stores = sparse_lib.stores_of(pieces)
  if stores is not None:
    for store in stores:
      tally.add_store(store)
  else:
    for p in pieces:
      tally.add_dense(np.asarray(getattr(p, "frames", p)))
  lengths = np.array(tally.lengths, np.int64)
  num_frames = int(lengths.sum())
  used = np.nonzero(tally.pitch_counts)[0]
  non_empty, num_notes = tally.non_empty, tally.num_notes

  def summary(values):
    if not values.size:
      return {"min": None, "median": None, "max": None}
    return {"min": float(values.min()), "median": float(np.median(values)),
            "max": float(values.max())}

  return {
      "num_pieces": len(lengths),
      "num_frames": num_frames,
      "num_notes": num_notes,
      "num_empty_frames": num_frames - non_empty,
      "frames_per_piece": summary(lengths),
      "pitch_min": (int(used[0]) + encoding.LOWEST_PITCH) if used.size else None,
      "pitch_max": (int(used[-1]) + encoding.LOWEST_PITCH) if used.size else None,
      "mean_polyphony": num_notes / non_empty if non_empty else 0.0,
      "rest_rate": (num_frames - non_empty) / num_frames if num_frames else 0.0,
      "duration": _duration_summary(tally),
      "duration_histogram": [[label, int(c)] for label, c in
                             zip(DURATION_BIN_LABELS, _duration_histogram(tally))],
  }


def format_duration_histogram(histogram: list, width: int = 40) -> str:
  """A text bar chart of [[label, count], ...]."""
  total = sum(c for _, c in histogram) or 1
  peak = max((c for _, c in histogram), default=0) or 1
  lines = []
  for label, count in histogram:
    bar = "#" * int(round(width * count / peak))
    lines.append(f"  {label:>10} q  {count:>9d}  {100.0 * count / total:5.1f}%  "
                 f"{bar}")
  return "\n".join(lines)

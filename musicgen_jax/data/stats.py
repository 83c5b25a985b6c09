"""Statistics of encoded pieces: sizes, pitch range, polyphony, rests, durations."""

from collections.abc import Sequence

import numpy as np

from musicgen_jax import encoding

# Duration histogram bins in quarter notes: (edge_low, edge_high] except the
# first, which includes 0.
DURATION_BIN_EDGES = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, np.inf)
DURATION_BIN_LABELS = ("<= 1/8", "1/8 - 1/4", "1/4 - 1/2", "1/2 - 1", "1 - 2",
                       "2 - 4", "> 4")


def dataset_statistics(pieces: Sequence) -> dict:
  """Statistics of pieces (Pieces with .frames, or <float32>[T, F] arrays).

  Returns:
    A JSON-ready dict: num_pieces, num_frames, num_notes, num_empty_frames,
    frames_per_piece {min, median, max}, pitch_min / pitch_max (MIDI numbers,
    None without notes), mean_polyphony (notes per non-empty frame), rest_rate
    (empty frames / frames), duration {mean, median, max} in quarter notes and
    duration_histogram [[label, count], ...] (see DURATION_BIN_LABELS).
  """
  arrays = [np.asarray(getattr(p, "frames", p)) for p in pieces]
  lengths = np.array([a.shape[0] for a in arrays], np.int64)
  num_frames = int(lengths.sum())
  pitch_counts = np.zeros(encoding.NUM_NOTES, np.int64)
  notes_per_frame = []
  durations = []
  for a in arrays:
    notes = a[:, :encoding.NUM_NOTES] > 0
    pitch_counts += notes.sum(axis=0)
    notes_per_frame.append(notes.sum(axis=1))
    durations.append(a[:, encoding.DURATION_INDEX])
  notes_per_frame = (np.concatenate(notes_per_frame) if arrays
                     else np.zeros(0, np.int64))
  durations = (np.concatenate(durations).astype(np.float64) if arrays
               else np.zeros(0))
  num_notes = int(notes_per_frame.sum())
  non_empty = int((notes_per_frame > 0).sum())
  used = np.nonzero(pitch_counts)[0]
  counts, _ = np.histogram(durations, bins=np.array(DURATION_BIN_EDGES))
  # np.histogram's bins are [low, high); move exact edges down to (low, high].
  for i, edge in enumerate(DURATION_BIN_EDGES[1:-1]):
    on_edge = int((durations == edge).sum())
    counts[i] += on_edge
    counts[i + 1] -= on_edge

  def summary(values):
    if not values.size:
      return {"min": None, "median": None, "max": None}
    return {"min": float(values.min()), "median": float(np.median(values)),
            "max": float(values.max())}

  return {
      "num_pieces": len(arrays),
      "num_frames": num_frames,
      "num_notes": num_notes,
      "num_empty_frames": num_frames - non_empty,
      "frames_per_piece": summary(lengths),
      "pitch_min": (int(used[0]) + encoding.LOWEST_PITCH) if used.size else None,
      "pitch_max": (int(used[-1]) + encoding.LOWEST_PITCH) if used.size else None,
      "mean_polyphony": num_notes / non_empty if non_empty else 0.0,
      "rest_rate": (num_frames - non_empty) / num_frames if num_frames else 0.0,
      "duration": {
          "mean": float(durations.mean()) if durations.size else None,
          **{k: v for k, v in summary(durations).items() if k != "min"},
      },
      "duration_histogram": [[label, int(c)] for label, c in
                             zip(DURATION_BIN_LABELS, counts)],
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

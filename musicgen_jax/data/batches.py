"""Training batches: random windows of seq_len + 1 frames, stateless in step.

`BatchSampler.batch(step)` depends on (seed, step) alone, so a run resumed at
step s sees exactly the batches an uninterrupted run sees. Each process of a
multi-process run takes its own rows of the same global batch: the global plan
(window starts and transpositions, a few integers per row) is drawn on every
process, and only the local rows are gathered.
"""

from collections.abc import Sequence

from absl import logging
import numpy as np

from musicgen_jax import encoding


class BatchSampler:
  """Uniform random windows over all valid window starts of the pieces.

  A window is seq_len + 1 consecutive frames of one piece (inputs and the
  shifted targets); every start position of every piece long enough is equally
  likely, so long pieces contribute in proportion to their length. Pieces
  shorter than seq_len + 1 frames are skipped and counted.

  With transpose_range > 0, each window is transposed by an integer number of
  semitones drawn uniformly from the shifts in [-transpose_range,
  transpose_range] that keep all of its notes within pitches 21..126; the
  duration column is untouched.
  """

  def __init__(self, pieces: Sequence, seq_len: int, global_batch_size: int,
               seed: int, transpose_range: int = 0, process_index: int = 0,
               process_count: int = 1):
    """Builds the sampler.

    Args:
      pieces: Pieces (with .frames <float32>[T, 107]) or bare frame arrays.
      seq_len: model input length; windows hold seq_len + 1 frames.
      global_batch_size: rows of the batch over all processes.
      seed: the data seed; batch(step) depends on (seed, step) alone.
      transpose_range: largest transposition in semitones (0 = none).
      process_index: this process's index in 0..process_count-1.
      process_count: number of processes sharing each global batch.

    Raises:
      ValueError: bad sizes, a batch that does not divide by process_count, or
        no piece as long as seq_len + 1 frames.
    """
    if seq_len < 1:
      raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if global_batch_size < 1:
      raise ValueError(f"global batch size must be >= 1, got {global_batch_size}")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} is not in "
                       f"0..{process_count - 1} (process_count={process_count})")
    if global_batch_size % process_count:
      raise ValueError(
          f"global batch size {global_batch_size} does not divide by the "
          f"{process_count} processes: set the batch size to a multiple of "
          f"{process_count}")
    if transpose_range < 0:
      raise ValueError(f"transpose_range must be >= 0, got {transpose_range}")
    self.seq_len = int(seq_len)
    self.window = self.seq_len + 1
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed = int(seed)
    self.transpose_range = int(transpose_range)
    self.process_index = int(process_index)
    self.process_count = int(process_count)

    arrays = [np.asarray(getattr(p, "frames", p)) for p in pieces]
    for a in arrays:
      if a.ndim != 2 or a.shape[1] != encoding.FRAME_DIM:
        raise ValueError(f"expected frames [T, {encoding.FRAME_DIM}], got "
                         f"{a.shape}")
    lengths = np.array([a.shape[0] for a in arrays], np.int64)
    usable = lengths >= self.window
    self.num_pieces = int(usable.sum())
    self.num_short_pieces = int((~usable).sum())
    if not self.num_pieces:
      longest = int(lengths.max()) if lengths.size else 0
      raise ValueError(
          f"no training piece has seq_len + 1 = {self.window} frames (the "
          f"longest of {lengths.size} has {longest}): lower --seq_len")
    if self.num_short_pieces:
      logging.info("%d of %d pieces are shorter than seq_len + 1 = %d frames "
                   "and are skipped", self.num_short_pieces, lengths.size,
                   self.window)
    kept = [a for a, u in zip(arrays, usable) if u]
    frames = np.concatenate(kept).astype(np.float32, copy=False)
    if self.transpose_range:
      # Notes padded with transpose_range empty pitches on each side: shifting
      # a window by s reads columns [R - s, R - s + 106) of the padded rows,
      # one strided gather through a sliding-window view.
      r = self.transpose_range
      padded = np.zeros((frames.shape[0], encoding.NUM_NOTES + 2 * r),
                        np.float32)
      padded[:, r:r + encoding.NUM_NOTES] = frames[:, :encoding.NUM_NOTES]
      self._shifted_notes = np.lib.stride_tricks.sliding_window_view(
          padded, encoding.NUM_NOTES, axis=1)  # [frames, 2R + 1, 106]
      self._durations = np.ascontiguousarray(
          frames[:, encoding.DURATION_INDEX])
      # Lowest / highest note index per frame (106 / -1 for an empty frame).
      notes = frames[:, :encoding.NUM_NOTES] > 0
      has_notes = notes.any(axis=1)
      self._lowest = np.where(has_notes, np.argmax(notes, axis=1),
                              encoding.NUM_NOTES).astype(np.int16)
      self._highest = np.where(
          has_notes, encoding.NUM_NOTES - 1 - np.argmax(notes[:, ::-1], axis=1),
          -1).astype(np.int16)
    else:
      # <float32>[total_frames, 107]: windows are gathered from one array.
      self._frames = np.ascontiguousarray(frames)
    piece_offsets = np.concatenate([[0], np.cumsum(lengths[usable])])[:-1]
    starts_per_piece = lengths[usable] - self.window + 1
    # Window number u belongs to the piece whose [cum_before, cum_after)
    # range contains it; its first frame is piece_offset + (u - cum_before).
    self._cum_starts = np.cumsum(starts_per_piece)
    self._start_shift = piece_offsets - (self._cum_starts - starts_per_piece)
    self.num_windows = int(self._cum_starts[-1])
    self._time = np.arange(self.window, dtype=np.int64)

  def _plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The global plan of one step: (frame starts, uniform draws) [global]."""
    rng = np.random.default_rng([self.seed, int(step)])
    windows = rng.integers(0, self.num_windows, size=self.global_batch_size)
    shift_draws = rng.random(self.global_batch_size)
    piece = np.searchsorted(self._cum_starts, windows, side="right")
    return windows + self._start_shift[piece], shift_draws

  def batch(self, step: int) -> np.ndarray:
    """This process's rows of global batch `step`.

    Returns:
      <float32>[global_batch_size // process_count, seq_len + 1, 107]; process
      p gets rows [p * n, (p + 1) * n) of the global batch.
    """
    starts, shift_draws = self._plan(step)
    lo = self.process_index * self.local_batch_size
    hi = lo + self.local_batch_size
    starts, shift_draws = starts[lo:hi], shift_draws[lo:hi]
    rows = starts[:, None] + self._time[None, :]  # [n, seq_len + 1]
    if not self.transpose_range:
      return self._frames[rows]
    shifts = self.shifts(rows, shift_draws)
    batch = np.empty((rows.shape[0], self.window, encoding.FRAME_DIM),
                     np.float32)
    batch[:, :, :encoding.NUM_NOTES] = self._shifted_notes[
        rows, (self.transpose_range - shifts)[:, None]]
    batch[:, :, encoding.DURATION_INDEX] = self._durations[rows]
    return batch

  def shifts(self, rows: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Per window, a shift drawn from those that keep its notes in range.

    Args:
      rows: <int>[n, seq_len + 1] frame indices of the windows.
      draws: <float>[n] uniform numbers in [0, 1).

    Returns:
      <int64>[n] shifts in semitones, uniform over the allowed ones.
    """
    lowest = self._lowest[rows].min(axis=1).astype(np.int64)
    highest = self._highest[rows].max(axis=1).astype(np.int64)
    low, high = shift_bounds(lowest, highest, self.transpose_range)
    return low + np.minimum((draws * (high - low + 1)).astype(np.int64),
                            high - low)

  def __call__(self, step: int) -> np.ndarray:
    return self.batch(step)


def shift_bounds(lowest: np.ndarray, highest: np.ndarray,
                 transpose_range: int) -> tuple[np.ndarray, np.ndarray]:
  """The shifts that keep every note of a window within pitches 21..126.

  Args:
    lowest, highest: <int>[B] the lowest and highest note index (0..105) in
      each window; a window without notes has highest < 0.
    transpose_range: the largest shift asked for.

  Returns:
    (low, high) <int64>[B]: shifts s with low <= s <= high keep the window's
    notes in 0..105; low <= 0 <= high. A window without notes allows
    [-transpose_range, transpose_range].
  """
  has_notes = highest >= 0
  r = transpose_range
  low = np.where(has_notes, np.maximum(-r, -lowest), -r)
  high = np.where(has_notes,
                  np.minimum(r, encoding.NUM_NOTES - 1 - highest), r)
  return low.astype(np.int64), high.astype(np.int64)


def allowed_shifts(notes: np.ndarray, transpose_range: int):
  """shift_bounds from <bool>[B, 106]: which pitches occur in each window."""
  has_notes = notes.any(axis=1)
  lowest = np.argmax(notes, axis=1)
  highest = np.where(
      has_notes, encoding.NUM_NOTES - 1 - np.argmax(notes[:, ::-1], axis=1), -1)
  return shift_bounds(lowest, highest, transpose_range)

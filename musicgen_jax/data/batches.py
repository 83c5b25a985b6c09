"""Training batches, stateless in the step: random windows, or pieces walked window by window.

Both `WindowBatches` and `StreamBatches` compute the batch of step s from (seed, s) alone,
so a run resumed at step s sees exactly the batches an uninterrupted run sees. Each
process of a multi-process run takes its own rows of the same global batch: the global
plan (a few integers per row) is drawn on every process, and only the local rows are
gathered. `train_batch(step)` gives what the train step reads:

  frames  float32[rows, window + 1, F]  inputs and the shifted targets
  mask    float32[rows, window]           1 where the target is real (0 past a piece's end)
  reset   bool[rows]                      the row starts a piece (a carried state restarts)
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
from absl import logging

from musicgen_jax import encoding
from musicgen_jax.data.sparse import ShardedFrames, SparseFrames, stores_of


def sparse_store(pieces: Sequence) -> SparseFrames | ShardedFrames:
  """The pieces' frames held sparse, in order: the loaded dataset's own store (or its
  shards' stores read as one) when the pieces are exactly their pieces, else built from
  the pieces' frames (Pieces or arrays)."""
  stores = stores_of(pieces)
  if stores is not None:
    return stores[0] if len(stores) == 1 else ShardedFrames(stores)
  if not pieces:
    raise ValueError("no training pieces")
  return SparseFrames.from_dense([np.asarray(getattr(p, "frames", p)) for p in pieces])


def _check_sizes(window: int, global_batch_size: int, process_index: int, process_count: int,
                 transpose_range: int) -> None:
  if window < 1:
    raise ValueError(f"seq_len must be >= 1, got {window}")
  if global_batch_size < 1:
    raise ValueError(f"global batch size must be >= 1, got {global_batch_size}")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in 0..{process_count - 1} "
                     f"(process_count={process_count})")
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} does not divide by the "
                     f"{process_count} processes: set the batch size to a multiple of "
                     f"{process_count}")
  if transpose_range < 0:
    raise ValueError(f"transpose_range must be >= 0, got {transpose_range}")


def note_extent(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per frame, the lowest and highest note index (106 and -1 for an empty frame)."""
  notes = frames[:, :encoding.NUM_NOTES] > 0
  has_notes = notes.any(axis=1)
  lowest = np.where(has_notes, np.argmax(notes, axis=1), encoding.NUM_NOTES)
  highest = np.where(has_notes, encoding.NUM_NOTES - 1 - np.argmax(notes[:, ::-1], axis=1), -1)
  return lowest.astype(np.int16), highest.astype(np.int16)


def transpose(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
  """frames float32[rows, T, F] with each row's notes (and their lengths, in frames with
  note lengths) moved by shifts[row] semitones.

  The shifts must keep every note in range (see `shift_bounds`); durations are untouched.
  """
  layout = encoding.frame_layout(frames, "frames", "rows, T")
  columns = [layout.notes] + ([layout.length_columns] if layout.lengths else [])
  out = frames.copy()
  for shift in np.unique(shifts):
    if shift:
      rows = shifts == shift
      for part in columns:
        out[rows, :, part] = np.roll(frames[rows, :, part], int(shift), axis=-1)
  return out


def shift_bounds(lowest: np.ndarray, highest: np.ndarray,
                 transpose_range: int) -> tuple[np.ndarray, np.ndarray]:
  """The shifts that keep every note of a window within pitches 21..126.

  Args:
    lowest, highest: int[B] the lowest and highest note index (0..105) in each window;
      a window without notes has highest < 0.
    transpose_range: the largest shift asked for.

  Returns:
    (low, high) int64[B]: shifts s with low <= s <= high keep the window's notes in
    0..105; low <= 0 <= high. A window without notes allows [-range, range].
  """
  has_notes = highest >= 0
  r = transpose_range
  low = np.where(has_notes, np.maximum(-r, -lowest), -r)
  high = np.where(has_notes, np.minimum(r, encoding.NUM_NOTES - 1 - highest), r)
  return low.astype(np.int64), high.astype(np.int64)


def allowed_shifts(notes: np.ndarray, transpose_range: int):
  """shift_bounds from bool[B, 106]: which pitches occur in each window."""
  lowest, highest = note_extent(notes.astype(np.float32))
  return shift_bounds(lowest.astype(np.int64), highest.astype(np.int64), transpose_range)


def draw_shifts(lowest, highest, draws: np.ndarray, transpose_range: int) -> np.ndarray:
  """Per window, a shift uniform over those that keep its notes in range (draws in [0, 1))."""
  low, high = shift_bounds(np.asarray(lowest, np.int64), np.asarray(highest, np.int64),
                           transpose_range)
  return low + np.minimum((draws * (high - low + 1)).astype(np.int64), high - low)


class WindowBatches:
  """Uniform random windows over all valid window starts of the pieces.

  A window is seq_len + 1 consecutive frames of one piece (inputs and the shifted
  targets); every start of every piece long enough is equally likely, so long pieces
  contribute in proportion to their length. Pieces shorter than seq_len + 1 frames are
  skipped and counted. With transpose_range > 0 each window is transposed by a whole
  number of semitones drawn uniformly from the shifts in [-transpose_range,
  transpose_range] that keep all of its notes within pitches 21..126.
  """

  def __init__(self, pieces: Sequence, seq_len: int, global_batch_size: int, seed: int,
               transpose_range: int = 0, process_index: int = 0, process_count: int = 1,
               share: int = 0):
    _check_sizes(seq_len, global_batch_size, process_index, process_count, transpose_range)
    self.share = int(share)  # a share's batches are drawn from a stream of their own
    self.seq_len, self.window = int(seq_len), int(seq_len) + 1
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed, self.transpose_range = int(seed), int(transpose_range)
    self.process_index = int(process_index)
    self._store = sparse_store(pieces)
    lengths = self._store.lengths_of_pieces()
    usable = lengths >= self.window
    self.num_pieces, self.num_short_pieces = int(usable.sum()), int((~usable).sum())
    if not self.num_pieces:
      longest = int(lengths.max()) if lengths.size else 0
      raise ValueError(f"no training piece has seq_len + 1 = {self.window} frames (the "
                       f"longest of {lengths.size} has {longest}): lower --seq_len")
    if self.num_short_pieces:
      logging.info("%d of %d pieces are shorter than seq_len + 1 = %d frames and are skipped",
                   self.num_short_pieces, lengths.size, self.window)
    # Window number u belongs to the piece whose [cum_before, cum_after) range holds it;
    # its first frame is piece_offset + (u - cum_before) (frame numbers of the store).
    offsets = self._store.offsets[:-1][usable]
    starts_per_piece = lengths[usable] - self.window + 1
    self._cum_starts = np.cumsum(starts_per_piece)
    self._start_shift = offsets - (self._cum_starts - starts_per_piece)
    self.num_windows = int(self._cum_starts[-1])
    self._time = np.arange(self.window, dtype=np.int64)

  def batch(self, step: int) -> np.ndarray:
    """This process's rows of global batch `step`: float32[local rows, seq_len + 1, F].

    Process p gets rows [p * n, (p + 1) * n) of the global batch.
    """
    rng = np.random.default_rng([self.seed, int(step)] + ([self.share] if self.share else []))
    windows = rng.integers(0, self.num_windows, size=self.global_batch_size)
    draws = rng.random(self.global_batch_size)
    starts = windows + self._start_shift[np.searchsorted(self._cum_starts, windows, "right")]
    lo = self.process_index * self.local_batch_size
    local = slice(lo, lo + self.local_batch_size)
    rows = starts[local, None] + self._time[None, :]  # [n, seq_len + 1]
    batch = self._store.gather(rows)  # made dense here, for these rows only
    if not self.transpose_range:
      return batch
    lowest, highest = note_extent(batch.reshape(-1, batch.shape[-1]))  # of this batch only
    shifts = draw_shifts(lowest.reshape(rows.shape).min(axis=1),
                         highest.reshape(rows.shape).max(axis=1), draws[local],
                         self.transpose_range)
    return transpose(batch, shifts)

  def train_batch(self, step: int) -> dict:
    frames = self.batch(step)
    rows = frames.shape[0]
    return {"frames": frames, "mask": np.ones((rows, self.seq_len), np.float32),
            "reset": np.ones((rows,), bool)}


class StreamBatches:
  """Each row walks whole pieces window after window (truncated BPTT).

  Per epoch the pieces are shuffled (from (seed, epoch)) and dealt to the rows, each
  piece to the row with the fewest windows so far; a row then reads its pieces window
  by window, seq_len targets at a time, so a model can carry its state from one step to
  the next. A piece's first window has `reset`; its last one is padded (mask 0). Rows
  that run out before the epoch ends are empty (mask 0). With transpose_range > 0 a
  whole piece is moved by one shift per epoch.
  """

  def __init__(self, pieces: Sequence, seq_len: int, global_batch_size: int, seed: int,
               transpose_range: int = 0, process_index: int = 0, process_count: int = 1,
               share: int = 0):
    _check_sizes(seq_len, global_batch_size, process_index, process_count, transpose_range)
    self.share = int(share)  # a share's batches are drawn from a stream of their own
    self.seq_len = int(seq_len)
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed, self.transpose_range = int(seed), int(transpose_range)
    self.process_index = int(process_index)
    self._store = sparse_store(pieces)
    lengths = self._store.lengths_of_pieces()
    self._pieces = np.flatnonzero(lengths >= 2)  # store indices of the pieces used
    if not self._pieces.size:
      raise ValueError("no training piece has two or more frames")
    self._lengths = lengths[self._pieces]
    self._windows = -(-(self._lengths - 1) // self.seq_len)
    lowest, highest = self._store.piece_extents()
    self._extent = [(int(lowest[i]), int(highest[i])) for i in self._pieces]
    self._epochs: list[np.ndarray] = []  # per epoch: int32[steps, rows, 3] piece/window/shift
    self._epoch_starts = [0]

  def _plan(self, epoch: int) -> np.ndarray:
    """int64[steps, rows, 3]: (piece, window, shift) per step and row; piece -1 = empty."""
    rng = np.random.default_rng([self.seed, epoch, 1] + ([self.share] if self.share else []))
    order = rng.permutation(len(self._pieces))
    draws = rng.random(len(self._pieces))
    rows = [(0, row, []) for row in range(self.global_batch_size)]  # (windows, row, pieces)
    heapq.heapify(rows)
    for index in order:
      count, row, assigned = heapq.heappop(rows)
      assigned.append(int(index))
      heapq.heappush(rows, (count + int(self._windows[index]), row, assigned))
    steps = max(count for count, _, _ in rows)
    plan = np.full((steps, self.global_batch_size, 3), -1, np.int64)
    for _, row, assigned in rows:
      t = 0
      for index in assigned:
        lo, hi = self._extent[index]
        shift = (draw_shifts([lo], [hi], draws[index:index + 1], self.transpose_range)[0]
                 if self.transpose_range else 0)
        for window in range(self._windows[index]):
          plan[t, row] = (index, window, shift)
          t += 1
    return plan

  def _locate(self, step: int) -> np.ndarray:
    """The plan rows of global step `step` (epochs are planned as they are reached)."""
    while step >= self._epoch_starts[-1]:
      plan = self._plan(len(self._epochs))
      self._epochs.append(plan)
      self._epoch_starts.append(self._epoch_starts[-1] + plan.shape[0])
    epoch = int(np.searchsorted(self._epoch_starts, step, side="right")) - 1
    return self._epochs[epoch][step - self._epoch_starts[epoch]]

  def steps_per_epoch(self, epoch: int = 0) -> int:
    while len(self._epochs) <= epoch:
      self._locate(self._epoch_starts[-1])
    return self._epochs[epoch].shape[0]

  def train_batch(self, step: int) -> dict:
    lo = self.process_index * self.local_batch_size
    plan = self._locate(int(step))[lo:lo + self.local_batch_size]
    width = self.seq_len
    used = plan[:, 0] >= 0
    index = np.where(used, plan[:, 0], 0)
    start = plan[:, 1] * width
    stop = np.minimum(start + width + 1, self._lengths[index])
    position = start[:, None] + np.arange(width + 1)[None, :]  # [rows, seq_len + 1]
    inside = used[:, None] & (position < stop[:, None])
    first = self._store.offsets[self._pieces[index]]
    frames = self._store.gather(first[:, None] + np.where(inside, position, 0))
    frames[~inside] = 0.0  # past a piece's end, and empty rows
    mask = inside[:, 1:].astype(np.float32)
    reset = np.where(used, plan[:, 1] == 0, True)
    shifts = np.where(used, plan[:, 2], 0)
    if shifts.any():
      frames = transpose(frames, shifts)
    return {"frames": frames, "mask": mask, "reset": reset}


def held_shares(num_shares: int, process_index: int, process_count: int) -> range:
  """The shares process `process_index` draws from: num_shares / process_count of them, in
  order, so the processes' rows of a global batch are the shares' parts in order."""
  if num_shares < 1:
    raise ValueError(f"data_shares must be >= 1, got {num_shares}")
  if num_shares % process_count:
    raise ValueError(f"--data_shares={num_shares} does not divide among {process_count} "
                     f"processes: use a multiple of {process_count}")
  per = num_shares // process_count
  return range(process_index * per, (process_index + 1) * per)


class ShareBatches:
  """A global batch made of `num_shares` equal parts, part h drawn from share h's pieces
  alone (by `kind`, WindowBatches or StreamBatches, with a random stream of its own).

  A process builds only the parts of the shares it holds (`held_shares`), so it needs only
  those pieces; one process holding every share gives the batches of many processes.
  """

  def __init__(self, kind, shares: dict, num_shares: int, seq_len: int,
               global_batch_size: int, seed: int, transpose_range: int = 0):
    if global_batch_size % num_shares:
      raise ValueError(f"global batch size {global_batch_size} does not divide into "
                       f"{num_shares} shares: use a multiple of {num_shares}")
    rows = global_batch_size // num_shares
    self.num_shares, self.shares = num_shares, sorted(shares)
    self.parts = []
    for h in self.shares:
      if not shares[h]:
        raise ValueError(f"training share {h} of {num_shares} has no pieces: lower "
                         "--data_shares (or --shard_files, for more shards)")
      self.parts.append(kind(shares[h], seq_len, rows, seed, transpose_range=transpose_range,
                             share=h))

  def train_batch(self, step: int) -> dict:
    parts = [part.train_batch(step) for part in self.parts]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

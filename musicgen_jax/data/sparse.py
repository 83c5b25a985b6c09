"""Pieces held sparse in memory, made dense one window (or one piece) at a time.

A dense frame with note lengths and metre is 216 float32 columns (864 bytes) where a
frame's notes, duration and metre need a few tens: the piano-midi corpus's 127,210 frames
take 54 MB dense. `SparseFrames` keeps a whole split as

  scalars     float32[N, S]   per frame: the duration, then the velocity and the two metre
                              columns where the layout has them
  note_start  int64[N + 1]    frame k's notes are entries note_start[k]:note_start[k + 1]
  pitches     uint8[nnz]      note index 0..105 (MIDI pitch - 21)
  lengths     float32[nnz]    each note's length in quarters (layouts with note lengths)

and `gather(rows)` writes float32[..., F] frames for any array of frame indices: exactly
the frames the dense arrays hold (tested column by column), so batches do not change.

    store = SparseFrames.from_sparse(pieces, layout, metre=[(signature, start_step), ...])
    store.gather(rows)          # rows int[n, W] of global frame indices -> float32[n, W, F]
    store.piece(i)              # float32[T_i, F], one piece
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from musicgen_jax import encoding

ARRAYS = ("offsets", "scalars", "note_start", "pitches", "lengths")
LAYOUT_FILE = "layout.json"
SUMMARY_FILE = "pieces.npz"  # per piece note extents, and the pitches used


def runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(lo, hi): `flat` as runs of consecutive integers, flat == concat(arange(lo, hi))."""
  flat = np.asarray(flat, np.int64).reshape(-1)
  if not flat.size:
    return flat, flat
  breaks = np.flatnonzero(flat[1:] != flat[:-1] + 1) + 1
  first = np.concatenate([[0], breaks])
  last = np.concatenate([breaks, [flat.size]]) - 1
  return flat[first], flat[last] + 1


def take_runs(array, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """array[lo[0]:hi[0]] ++ array[lo[1]:hi[1]] ++ ...: one read a run from disk (`OnDisk`),
  one indexing for an array in memory."""
  if isinstance(array, OnDisk):
    return array.take_runs(lo, hi)
  n = hi - lo
  return array[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))]


class OnDisk:
  """A read-only .npy array read from its file on each access (`os.pread`), never mapped:
  a gather reads only the byte ranges it needs, and the pages read live in the system's
  page cache, not in the process's resident memory, however many batches a run reads.

  The file stays open while the array lives, so it reads the same data after the file is
  removed or replaced (as a memory map would). Indexing with a slice, an integer or an
  integer array (read as runs of consecutive indices, one read per run) gives an ordinary
  numpy array. Pickles as its path.
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self._fd = os.open(self.path, os.O_RDONLY)
    try:
      with os.fdopen(os.dup(self._fd), "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        self._start = f.tell()
    except BaseException:
      os.close(self._fd)
      raise
    if fortran and len(shape) > 1:
      os.close(self._fd)
      raise ValueError(f"{path}: a Fortran-ordered array")
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self._row = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

  def __del__(self, _close=os.close):  # os itself may be gone at interpreter exit
    fd = getattr(self, "_fd", None)
    if fd is not None:
      try:
        _close(fd)
      except OSError:
        pass

  def __reduce__(self):
    return (OnDisk, (self.path,))

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def nbytes(self) -> int:
    return self.shape[0] * self._row

  def _read(self, lo: int, hi: int, into: np.ndarray | None = None) -> np.ndarray:
    """Rows lo:hi (0 <= lo <= hi <= len)."""
    out = into if into is not None else np.empty((hi - lo,) + self.shape[1:], self.dtype)
    size = (hi - lo) * self._row
    if size:
      view = memoryview(out.reshape(-1).view(np.uint8))
      fd, done = self._fd, 0
      while done < size:
        got = os.preadv(fd, [view[done:size]], self._start + lo * self._row + done)
        if got <= 0:
          raise OSError(f"{self.path}: file shorter than its header says")
        done += got
    return out

  def __getitem__(self, key):
    if isinstance(key, slice):
      lo, hi, step = key.indices(len(self))
      if step != 1:
        raise IndexError("OnDisk reads slices with step 1 only")
      return self._read(lo, max(lo, hi))
    if isinstance(key, (int, np.integer)):
      k = int(key) + (len(self) if key < 0 else 0)
      if not 0 <= k < len(self):
        raise IndexError(f"index {key} out of range for {len(self)} rows")
      return self._read(k, k + 1)[0]
    index = np.asarray(key)
    if index.dtype == bool or not np.issubdtype(index.dtype, np.integer):
      raise IndexError("OnDisk takes slices, integers and integer arrays")
    return self.take_runs(*runs(index)).reshape(index.shape + self.shape[1:])  # checks range

  def take_runs(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows lo[0]:hi[0], then lo[1]:hi[1], ... in one array: one read a run."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    if lo.size and (lo.min() < 0 or hi.max() > len(self) or (hi < lo).any()):
      raise IndexError(f"runs out of range for {len(self)} rows")
    out = np.empty((int((hi - lo).sum()),) + self.shape[1:], self.dtype)
    at = 0
    for a, b in zip(lo.tolist(), hi.tolist()):
      self._read(a, b, into=out[at:at + b - a])
      at += b - a
    return out

  def __array__(self, dtype=None, copy=None):
    whole = self._read(0, len(self))
    return whole if dtype is None else whole.astype(dtype)


class SparseFrames:
  """Several pieces' frames, sparse, concatenated (piece i is frames offsets[i]:offsets[i+1]).

  Read-only once built; `gather` and `piece` allocate only what they return.
  """

  def __init__(self, layout: encoding.FrameLayout, offsets: np.ndarray, scalars: np.ndarray,
               note_start: np.ndarray, pitches: np.ndarray, lengths: np.ndarray | None):
    self.layout = layout
    self.offsets = np.array(offsets, np.int64)  # one integer a piece: in memory
    self.scalars = scalars
    self.note_start = note_start
    self.pitches = pitches
    self.lengths = lengths
    self._scalar_columns = self.scalar_columns(layout)
    self._extents = None
    self._piece_extents = None
    self._pitches_used = None
    for array in (self.offsets, scalars, note_start, pitches, lengths):
      if isinstance(array, np.ndarray) and not isinstance(array, np.memmap):
        array.flags.writeable = False

  @staticmethod
  def scalar_columns(layout: encoding.FrameLayout) -> list[int]:
    """The dense columns held one value per frame: duration, velocity, metre."""
    columns = [encoding.DURATION_INDEX]
    if layout.velocity:
      columns.append(layout.velocity_index)
    if layout.metre:
      columns += list(range(layout.metre_columns.start, layout.metre_columns.stop))
    return columns

  @property
  def num_pieces(self) -> int:
    return len(self.offsets) - 1

  @property
  def num_frames(self) -> int:
    return int(self.offsets[-1])

  @property
  def width(self) -> int:
    return self.layout.width

  @property
  def nbytes(self) -> int:
    return sum(a.nbytes for a in (self.offsets, self.scalars, self.note_start, self.pitches,
                                  self.lengths) if a is not None)

  def piece_length(self, index: int) -> int:
    return int(self.offsets[index + 1] - self.offsets[index])

  def lengths_of_pieces(self) -> np.ndarray:
    return np.diff(self.offsets)

  @classmethod
  def from_dense(cls, arrays: Sequence[np.ndarray]) -> "SparseFrames":
    """The same frames, from dense float32[T_i, F] arrays of one layout."""
    if not arrays:
      raise ValueError("no pieces")
    layout = encoding.frame_layout(arrays[0], "a piece")
    for a in arrays:
      if encoding.frame_layout(a, "a piece") != layout:
        raise ValueError("the pieces do not share one frame layout")
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    columns = cls.scalar_columns(layout)
    scalars = np.concatenate([np.asarray(a, np.float32)[:, columns] for a in arrays]
                             ).reshape(-1, len(columns))
    rows, pitches = [], []
    for offset, a in zip(offsets[:-1], arrays):
      r, p = np.nonzero(np.asarray(a)[:, layout.notes] > 0.5)
      rows.append(r.astype(np.int64) + offset)
      pitches.append(p.astype(np.uint8))
    rows = np.concatenate(rows)
    pitches = np.concatenate(pitches)
    lengths = None
    if layout.lengths:
      lengths = np.concatenate([
          np.asarray(a, np.float32)[:, layout.length_columns][np.nonzero(
              np.asarray(a)[:, layout.notes] > 0.5)] for a in arrays])
    return cls(layout, offsets, np.ascontiguousarray(scalars), _starts(rows, offsets[-1]),
               pitches, lengths)

  @classmethod
  def from_sparse(cls, pieces: Sequence, layout: encoding.FrameLayout,
                  metre: Sequence[tuple[str, int]] | None = None,
                  steps_per_quarter: int = 12) -> "SparseFrames":
    """From the cache's `sources.SparsePiece`s (notes, durations, velocities, lengths);
    with `layout.metre`, each piece's metre columns from its (time signature, start step),
    as `encoding.add_metre` computes them."""
    if layout.metre and (metre is None or len(metre) != len(pieces)):
      raise ValueError("a layout with metre needs each piece's (time_signature, start_step)")
    lengths_ = np.array([p.num_frames for p in pieces], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths_)]).astype(np.int64)
    columns = [np.concatenate([p.durations for p in pieces]).astype(np.float32)]
    if layout.velocity:
      columns.append(np.concatenate([p.velocities for p in pieces]).astype(np.float32))
    if layout.metre:
      columns += list(np.concatenate(
          [_metre(p, signature, start, steps_per_quarter)
           for p, (signature, start) in zip(pieces, metre)]).T)
    rows = np.concatenate([p.rows.astype(np.int64) + o for p, o in zip(pieces, offsets[:-1])])
    pitches = np.concatenate([p.pitches for p in pieces]).astype(np.uint8)
    lengths = (np.concatenate([p.lengths for p in pieces]).astype(np.float32)
               if layout.lengths else None)
    key = rows * encoding.NUM_NOTES + pitches
    if key.size and not (key[1:] >= key[:-1]).all():  # frame by frame, lowest pitch first
      order = np.argsort(key, kind="stable")
      rows, pitches = rows[order], pitches[order]
      lengths = lengths[order] if lengths is not None else None
    del key
    return cls(layout, offsets, np.ascontiguousarray(np.stack(columns, axis=1)),
               _starts(rows, offsets[-1]), pitches, lengths)

  def gather(self, rows) -> np.ndarray:
    """float32[*rows.shape, F]: the frames at global frame indices `rows`.

    The rows are read as runs of consecutive frames (a window, a piece): each array is read
    once a run, which is what keeps a batch cheap when the arrays are on disk."""
    rows = np.asarray(rows, np.int64)
    flat = rows.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= self.num_frames):
      raise IndexError(f"frame index out of range 0..{self.num_frames - 1}")
    lo, hi = runs(flat)
    out = np.zeros((flat.size, self.width), np.float32)
    out[:, self._scalar_columns] = take_runs(self.scalars, lo, hi)
    # Each run's note_start[lo:hi + 1]: its frames' first entries, and the end of the last.
    bounds = take_runs(self.note_start, lo, hi + 1)
    ends = np.cumsum(hi - lo + 1) - 1  # position of each run's last bound
    counts = np.diff(bounds)
    counts = np.delete(counts, ends[:-1])  # (the step from one run to the next)
    total = int(counts.sum())
    if total:
      starts = ends - (hi - lo)
      entry_lo, entry_hi = bounds[starts], bounds[ends]
      frame = np.repeat(np.arange(flat.size), counts)
      pitch = take_runs(self.pitches, entry_lo, entry_hi).astype(np.int64)
      out[frame, pitch] = 1.0
      if self.lengths is not None:
        out[frame, self.layout.length_columns.start + pitch] = take_runs(
            self.lengths, entry_lo, entry_hi)
    return out.reshape(rows.shape + (self.width,))

  def piece(self, index: int) -> np.ndarray:
    """float32[T_i, F]: piece `index` made dense (read-only)."""
    out = self.gather(np.arange(self.offsets[index], self.offsets[index + 1]))
    out.flags.writeable = False
    return out

  def save(self, folder: str) -> None:
    """Writes the store as .npy files (and its layout) in `folder`, for `open`."""
    os.makedirs(folder, exist_ok=True)
    for name in ARRAYS:
      array = getattr(self, name)
      if array is not None:
        np.save(os.path.join(folder, name + ".npy"), np.asarray(array))
    lowest, highest = self.piece_extents()
    np.savez(os.path.join(folder, SUMMARY_FILE), piece_lowest=lowest, piece_highest=highest,
             pitches_used=self.pitches_used())
    with open(os.path.join(folder, LAYOUT_FILE), "w") as f:
      json.dump(dataclasses.asdict(self.layout), f)

  @classmethod
  def open(cls, folder: str) -> "SparseFrames":
    """A store `save` wrote, its arrays read from disk as gathers need them (`OnDisk`):
    only the per-piece offsets are held in memory, so memory does not grow with the corpus
    or with the batches read."""
    with open(os.path.join(folder, LAYOUT_FILE)) as f:
      layout = encoding.FrameLayout(**json.load(f))
    arrays = {}
    for name in ARRAYS:
      path = os.path.join(folder, name + ".npy")
      if name == "offsets":
        arrays[name] = np.load(path) if os.path.exists(path) else None
      else:
        arrays[name] = OnDisk(path) if os.path.exists(path) else None
    store = cls(layout, **arrays)
    with np.load(os.path.join(folder, SUMMARY_FILE)) as summary:  # small: one entry a piece
      store._piece_extents = (summary["piece_lowest"], summary["piece_highest"])
      store._pitches_used = summary["pitches_used"]
    return store

  def piece_extents(self) -> tuple[np.ndarray, np.ndarray]:
    """int16[num_pieces] each: per piece the lowest and highest note index (106 and -1 for
    a piece without notes), reading each piece's notes once."""
    if self._piece_extents is None:
      lowest = np.full(self.num_pieces, encoding.NUM_NOTES, np.int16)
      highest = np.full(self.num_pieces, -1, np.int16)
      bounds = self.note_start[self.offsets]
      for i in range(self.num_pieces):
        if bounds[i + 1] > bounds[i]:
          pitches = np.asarray(self.pitches[bounds[i]:bounds[i + 1]])
          lowest[i], highest[i] = pitches.min(), pitches.max()
      self._piece_extents = (lowest, highest)
    return self._piece_extents

  def pitches_used(self, chunk: int = 1 << 24) -> np.ndarray:
    """bool[106]: the note indices that occur, read a chunk at a time."""
    if self._pitches_used is None:
      used = np.zeros(encoding.NUM_NOTES, bool)
      for start in range(0, len(self.pitches), chunk):
        used |= np.bincount(np.asarray(self.pitches[start:start + chunk]),
                            minlength=encoding.NUM_NOTES)[:encoding.NUM_NOTES] > 0
      self._pitches_used = used
    return self._pitches_used

  def extents(self) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the lowest and highest note index (106 and -1 for an empty frame), as
    `batches.note_extent` gives them for dense frames; computed once."""
    if self._extents is None:
      counts = np.diff(self.note_start)
      has = counts > 0
      lowest = np.full(self.num_frames, encoding.NUM_NOTES, np.int16)
      highest = np.full(self.num_frames, -1, np.int16)
      # Entries run lowest pitch first within each frame.
      lowest[has] = self.pitches[self.note_start[:-1][has]]
      highest[has] = self.pitches[self.note_start[1:][has] - 1]
      self._extents = (lowest, highest)
    return self._extents


def stores_of(pieces: Sequence) -> list | None:
  """The stores the pieces are held in, when the pieces are exactly those stores' pieces in
  order (store after store, each from its first piece to its last); None otherwise."""
  stores, expected = [], 0
  for p in pieces:
    held = getattr(p, "sparse", None)
    if held is None:
      return None
    store, index = held
    if stores and store is stores[-1] and index == expected:
      expected += 1
    elif index == 0 and (not stores or expected == stores[-1].num_pieces):
      stores.append(store)
      expected = 1
    else:
      return None
  if not stores or expected != stores[-1].num_pieces:
    return None
  return stores


def _starts(rows: np.ndarray, num_frames: int) -> np.ndarray:
  """int64[num_frames + 1]: where each frame's entries start in rows (sorted)."""
  counts = np.bincount(rows, minlength=int(num_frames)) if rows.size else np.zeros(
      int(num_frames), np.int64)
  return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _metre(piece, time_signature: str, start_step: int, steps_per_quarter: int) -> np.ndarray:
  """float32[T, 2]: the piece's metre columns, by `encoding.add_metre` itself (on frames
  holding only what it reads: the durations, and a note where the frame has one)."""
  frames = np.zeros((piece.num_frames, encoding.FRAME_DIM), np.float32)
  frames[:, encoding.DURATION_INDEX] = piece.durations
  frames[piece.rows, 0] = 1.0
  # A copy: a view would keep the whole [T, 109] array alive until the pieces are joined.
  return encoding.add_metre(frames, time_signature, steps_per_quarter, start_step)[:, -2:].copy()


class ShardedFrames:
  """Several `SparseFrames` (shards, each memory-mapped from its own folder) read as one:
  piece i of the whole is piece i - k of the shard holding it, frames likewise, so a
  batcher over shards gathers exactly the frames one store of the same pieces would."""

  def __init__(self, stores: Sequence[SparseFrames]):
    if not stores:
      raise ValueError("no shards")
    self.stores = list(stores)
    self.layout = self.stores[0].layout
    if any(s.layout != self.layout for s in self.stores):
      raise ValueError("the shards do not share one frame layout")
    self._frame_starts = np.cumsum([0] + [s.num_frames for s in self.stores]).astype(np.int64)
    self._piece_starts = np.cumsum([0] + [s.num_pieces for s in self.stores]).astype(np.int64)
    self.offsets = np.concatenate([self.stores[0].offsets[:1]] + [
        s.offsets[1:] + base for s, base in zip(self.stores, self._frame_starts[:-1])])

  num_pieces = SparseFrames.num_pieces
  num_frames = SparseFrames.num_frames
  piece_length = SparseFrames.piece_length
  lengths_of_pieces = SparseFrames.lengths_of_pieces
  piece = SparseFrames.piece

  @property
  def width(self) -> int:
    return self.layout.width

  @property
  def nbytes(self) -> int:
    return sum(s.nbytes for s in self.stores)

  def gather(self, rows) -> np.ndarray:
    """float32[*rows.shape, F]: the frames at frame indices `rows` of the whole, each read
    from its shard."""
    rows = np.asarray(rows, np.int64)
    flat = rows.reshape(-1)
    shard = np.searchsorted(self._frame_starts, flat, side="right") - 1
    if (flat < 0).any() or (flat >= self.num_frames).any():
      raise IndexError(f"frame index out of range 0..{self.num_frames - 1}")
    out = np.empty((flat.size, self.width), np.float32)
    order = np.argsort(shard, kind="stable")  # by shard, each shard's rows in their order
    cuts = np.flatnonzero(np.diff(shard[order])) + 1
    for part in np.split(order, cuts) if flat.size else ():
      k = shard[part[0]]
      out[part] = self.stores[k].gather(flat[part] - self._frame_starts[k])
    return out.reshape(rows.shape + (self.width,))

  def piece_extents(self) -> tuple[np.ndarray, np.ndarray]:
    parts = [s.piece_extents() for s in self.stores]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

  def pitches_used(self) -> np.ndarray:
    return np.logical_or.reduce([s.pitches_used() for s in self.stores])

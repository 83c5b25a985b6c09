"""Pieces held sparse: every column made dense exactly as the dense frames hold it, and the
same batches from a sparse dataset as from its frames held dense."""

import pathlib

import numpy as np
import pytest

from musicgen_jax import encoding
from musicgen_jax.data import DataConfig, Piece, StreamBatches, WindowBatches, load_dataset
from musicgen_jax.data import batches as batches_lib
from musicgen_jax.data import sources
from musicgen_jax.data.sparse import SparseFrames


def _piece(rng, length, velocity, lengths, metre):
  """Random frames of a layout: chords of 0-4 notes (empty frames too), durations on the
  grid, velocities, note lengths where notes start, metre as `add_metre` computes it."""
  frames = np.zeros((length, encoding.FRAME_DIM), np.float32)
  for t in range(length):
    frames[t, rng.choice(encoding.NUM_NOTES, size=rng.integers(0, 5), replace=False)] = 1.0
  frames[:, encoding.DURATION_INDEX] = rng.integers(1, 30, size=length) / 12
  parts = [frames]
  if velocity:
    parts.append(np.where(frames[:, :encoding.NUM_NOTES].any(1), rng.integers(1, 128, length),
                          0).astype(np.float32)[:, None])
  if lengths:
    parts.append(frames[:, :encoding.NUM_NOTES] * rng.integers(1, 60, frames[:, :106].shape) / 12)
  frames = np.concatenate(parts, axis=1).astype(np.float32)
  if metre:
    frames = encoding.add_metre(frames, "3/4", 12, int(rng.integers(0, 36)))
  return frames


LAYOUTS = [(v, l, m) for v in (False, True) for l in (False, True) for m in (False, True)]


@pytest.mark.parametrize("velocity, lengths, metre", LAYOUTS)
def test_gather_gives_the_dense_frames_of_every_layout(velocity, lengths, metre):
  rng = np.random.default_rng(7)
  arrays = [_piece(rng, n, velocity, lengths, metre) for n in (1, 40, 3, 25)]
  store = SparseFrames.from_dense(arrays)
  dense = np.concatenate(arrays)
  assert store.num_frames == len(dense) and store.width == dense.shape[1]
  rows = rng.integers(0, len(dense), size=(6, 9))  # any order, repeats
  np.testing.assert_array_equal(store.gather(rows), dense[rows])
  for i, a in enumerate(arrays):
    np.testing.assert_array_equal(store.piece(i), a)
  lowest, highest = batches_lib.note_extent(dense)
  np.testing.assert_array_equal(store.extents()[0], lowest)
  np.testing.assert_array_equal(store.extents()[1], highest)
  assert store.nbytes < dense.nbytes / 4


def test_from_the_cache_s_sparse_pieces_with_metre_is_add_metre_s():
  rng = np.random.default_rng(3)
  stored = [_piece(rng, n, True, True, False) for n in (30, 12)]
  metre = [("6/8", 5), ("4/4", 0)]
  held = [sources.SparsePiece.from_frames(a, {}) for a in stored]
  shuffle = rng.permutation(len(held[0].rows))  # entries in any order are sorted on the way
  held[0] = sources.SparsePiece(held[0].rows[shuffle], held[0].pitches[shuffle],
                                held[0].durations, {}, held[0].velocities,
                                held[0].lengths[shuffle])
  store = SparseFrames.from_sparse(held,
                                   encoding.FrameLayout(velocity=True, lengths=True, metre=True),
                                   metre=metre, steps_per_quarter=12)
  for i, (a, (signature, start)) in enumerate(zip(stored, metre)):
    np.testing.assert_array_equal(store.piece(i), encoding.add_metre(a, signature, 12, start))
  lowest, highest = batches_lib.note_extent(np.concatenate(stored))
  np.testing.assert_array_equal(store.extents()[0], lowest)  # entries lowest pitch first
  np.testing.assert_array_equal(store.extents()[1], highest)


def test_a_loaded_dataset_holds_its_pieces_sparse_with_the_frames_of_encode_file(tmp_path):
  from musicgen_jax.data import encode_file  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  music = tmp_path / "music"
  music.mkdir()
  for i in range(6):
    frames = _piece(rng, 30, False, False, False)
    encoding.frames_to_midi(frames, time_signature="3/4").save(str(music / f"p{i}.mid"))
  cfg = DataConfig(dataset="midi_dir", data_dir=str(music), cache_dir=str(tmp_path / "cache"),
                   valid_fraction=0.2, test_fraction=0.2, num_workers=1)
  dataset = load_dataset(cfg)
  pieces = [p for split in ("train", "valid", "test") for p in dataset[split]]
  assert len(pieces) == 6
  for piece in pieces:
    assert piece.sparse is not None
    frames, _ = encode_file(cfg, str(music / piece.name))
    np.testing.assert_array_equal(piece.frames, frames)
    assert piece.num_frames == len(frames)
  train = dataset["train"]
  assert batches_lib.sparse_store(train) is train[0].sparse[0]  # the batcher reuses it
  dense = [Piece(p.name, np.array(p.frames)) for p in train]
  for kind in (WindowBatches, StreamBatches):
    a = kind(train, 8, 6, seed=1, transpose_range=3)
    b = kind(dense, 8, 6, seed=1, transpose_range=3)
    for step in (0, 1, 7, 30):
      got, want = a.train_batch(step), b.train_batch(step)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_a_piece_holds_dense_frames_or_a_store_place_not_both():
  frames = np.zeros((3, encoding.FRAME_DIM), np.float32)
  store = SparseFrames.from_dense([frames])
  with pytest.raises(ValueError, match="either dense frames or"):
    Piece("x", frames, sparse=(store, 0))
  with pytest.raises(ValueError, match="either dense frames or"):
    Piece("x")
  assert Piece("x", sparse=(store, 0)).num_frames == 3


def test_a_saved_store_opens_memory_mapped_with_the_same_frames(tmp_path):
  rng = np.random.default_rng(5)
  arrays = [_piece(rng, n, True, True, True) for n in (12, 1, 30)]
  store = SparseFrames.from_dense(arrays)
  store.save(str(tmp_path / "store"))
  mapped = SparseFrames.open(str(tmp_path / "store"))
  assert isinstance(mapped.pitches, np.memmap) and mapped.layout == store.layout
  rows = rng.integers(0, store.num_frames, size=(4, 5))
  np.testing.assert_array_equal(mapped.gather(rows), store.gather(rows))
  fresh = SparseFrames.from_dense(arrays)  # computed from the notes, not read back
  for got, want in zip(mapped.piece_extents(), fresh.piece_extents()):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(mapped.pitches_used(), fresh.pitches_used())
  np.testing.assert_array_equal(fresh.pitches_used(),
                                np.concatenate(arrays)[:, :encoding.NUM_NOTES].any(axis=0))


def _midi_folder(folder, count=6, seed=0):
  rng = np.random.default_rng(seed)
  folder.mkdir(exist_ok=True)
  for i in range(count):
    frames = _piece(rng, 20, False, False, False)
    encoding.frames_to_midi(frames).save(str(folder / f"p{i}.mid"))


def test_the_next_load_maps_the_splits_from_disk_until_the_source_changes(tmp_path):
  music = tmp_path / "music"
  _midi_folder(music)
  cfg = DataConfig(dataset="midi_dir", data_dir=str(music), cache_dir=str(tmp_path / "cache"),
                   valid_fraction=0.2, test_fraction=0.2, num_workers=1)
  first = load_dataset(cfg)
  second = load_dataset(cfg)
  assert "mapped" not in first.summary and second.summary["mapped"]
  assert second.summary["cache_hit"] and second.summary["num_encoded"] == 0
  assert second.summary["num_frames"] == first.summary["num_frames"]
  for split in ("train", "valid", "test"):
    assert [p.name for p in second[split]] == [p.name for p in first[split]]
    for a, b in zip(first[split], second[split]):
      assert isinstance(b.sparse[0].pitches, np.memmap)
      np.testing.assert_array_equal(a.frames, b.frames)
      assert (a.tempo_bpm, a.time_signature) == (b.tempo_bpm, b.time_signature)
  # A changed file is encoded again, and the splits are mapped anew (the old ones removed).
  _midi_folder(music, count=1, seed=9)  # p0.mid rewritten
  third = load_dataset(cfg)
  assert "mapped" not in third.summary and third.summary["num_encoded"] == 1
  fourth = load_dataset(cfg)
  assert fourth.summary["mapped"] != second.summary["mapped"]
  assert [n for n in (tmp_path / "cache").iterdir() if ".mapped-" in n.name] == [
      pathlib.Path(fourth.summary["mapped"])]
  p0 = next(p for s in ("train", "valid", "test") for p in fourth[s] if p.name == "p0.mid")
  from musicgen_jax.data import encode_file  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(p0.frames, encode_file(cfg, str(music / "p0.mid"))[0])

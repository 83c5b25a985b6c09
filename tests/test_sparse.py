"""Pieces held sparse: every column made dense exactly as the dense frames hold it, and the
same batches from a sparse dataset as from its frames held dense."""

import pathlib
import pickle

import numpy as np
import pytest

from musicgen_jax import encoding
from musicgen_jax.data import DataConfig, Piece, StreamBatches, WindowBatches, load_dataset
from musicgen_jax.data import batches as batches_lib
from musicgen_jax.data import sources
from musicgen_jax.data import stats as stats_lib
from musicgen_jax.data.sparse import (OnDisk, ShardedFrames, SparseFrames, runs, stores_of,
                                      take_runs)


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
  # Windows (runs of consecutive frames, across pieces too), a run met again, and nothing.
  windows = np.concatenate([rng.integers(0, len(dense) - 10, size=(5, 1)) + np.arange(10),
                            np.arange(55, 65)[None]])
  windows[2, 5:] = windows[2, :5]
  np.testing.assert_array_equal(store.gather(windows), dense[windows])
  assert store.gather(np.zeros((0, 4), np.int64)).shape == (0, 4, dense.shape[1])
  with pytest.raises(IndexError):
    store.gather([len(dense)])
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


def test_runs_and_take_runs_read_the_same_rows_from_memory_and_disk(tmp_path):
  flat = np.array([4, 5, 6, 2, 9, 10, 10, 3])
  lo, hi = runs(flat)
  np.testing.assert_array_equal(lo, [4, 2, 9, 10, 3])
  np.testing.assert_array_equal(hi, [7, 3, 11, 11, 4])
  assert runs(np.zeros(0, np.int64))[0].size == 0
  array = np.arange(36, dtype=np.float32).reshape(12, 3)
  np.save(tmp_path / "a.npy", array)
  on_disk = OnDisk(str(tmp_path / "a.npy"))
  for rows in (flat, np.array([11]), np.zeros(0, np.int64)):
    lo, hi = runs(rows)
    np.testing.assert_array_equal(take_runs(array, lo, hi), array[rows])
    np.testing.assert_array_equal(take_runs(on_disk, lo, hi), array[rows])
    np.testing.assert_array_equal(on_disk[rows], array[rows])
  with pytest.raises(IndexError):
    on_disk.take_runs(np.array([10]), np.array([13]))


def _mapped_files(folder) -> list[str]:
  """The files under `folder` mapped into this process's memory."""
  with open("/proc/self/maps") as f:
    return [line.split()[-1] for line in f if str(folder) in line]


def test_a_saved_store_opens_read_from_disk_with_the_same_frames(tmp_path):
  rng = np.random.default_rng(5)
  arrays = [_piece(rng, n, True, True, True) for n in (12, 1, 30)]
  store = SparseFrames.from_dense(arrays)
  store.save(str(tmp_path / "store"))
  mapped = SparseFrames.open(str(tmp_path / "store"))
  assert isinstance(mapped.pitches, OnDisk) and mapped.layout == store.layout
  rows = rng.integers(0, store.num_frames, size=(4, 5))
  np.testing.assert_array_equal(mapped.gather(rows), store.gather(rows))
  windows = rng.integers(0, store.num_frames - 6, size=(8, 1)) + np.arange(6)
  np.testing.assert_array_equal(mapped.gather(windows), np.concatenate(arrays)[windows])
  for i in range(store.num_pieces):
    np.testing.assert_array_equal(mapped.piece(i), store.piece(i))
  if pathlib.Path("/proc/self/maps").exists():  # read, never mapped: no page counts as ours
    assert not _mapped_files(tmp_path / "store")
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
      assert isinstance(b.sparse[0].pitches, OnDisk)
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


def test_on_disk_arrays_index_as_numpy_does(tmp_path):
  rng = np.random.default_rng(3)
  for shape, dtype in (((50,), np.int64), ((40, 3), np.float32), ((0,), np.uint8)):
    want = (rng.random(shape) * 100).astype(dtype)
    np.save(tmp_path / "a.npy", want)
    got = OnDisk(str(tmp_path / "a.npy"))
    assert got.shape == want.shape and got.dtype == want.dtype and len(got) == len(want)
    np.testing.assert_array_equal(np.asarray(got), want)
    if not len(want):
      continue
    for key in (slice(3, 9), slice(None), slice(-5, None), slice(7, 2), 0, -1, 17):
      np.testing.assert_array_equal(got[key], want[key])
    index = np.array([[4, 5, 6, 1], [2, 3, 30, 31]])  # runs of neighbours, and strays
    np.testing.assert_array_equal(got[index], want[index])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(got))[index], want[index])
    for bad in (len(want), -len(want) - 1, np.array([0, len(want)]), slice(0, 9, 2)):
      with pytest.raises(IndexError):
        got[bad]  # pylint: disable=pointless-statement


def _stores(rng, sizes):
  arrays = [[_piece(rng, n, True, True, True) for n in group] for group in sizes]
  return arrays, [SparseFrames.from_dense(group) for group in arrays]


def test_shards_read_as_one_give_the_frames_of_one_store():
  rng = np.random.default_rng(11)
  arrays, stores = _stores(rng, [(9, 1, 14), (20,), (3, 8)])
  whole = SparseFrames.from_dense([a for group in arrays for a in group])
  sharded = ShardedFrames(stores)
  assert sharded.num_pieces == whole.num_pieces and sharded.num_frames == whole.num_frames
  np.testing.assert_array_equal(sharded.offsets, whole.offsets)
  rows = rng.integers(0, whole.num_frames, size=(6, 7))
  np.testing.assert_array_equal(sharded.gather(rows), whole.gather(rows))
  for i in range(whole.num_pieces):
    np.testing.assert_array_equal(sharded.piece(i), whole.piece(i))
  for got, want in zip(sharded.piece_extents(), whole.piece_extents()):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(sharded.pitches_used(), whole.pitches_used())
  with pytest.raises(IndexError):
    sharded.gather([whole.num_frames])
  # Pieces that are whole stores in order are read from those stores; anything else is not.
  pieces = [Piece(f"p{k}", sparse=(s, i)) for k, s in enumerate(stores)
            for i in range(s.num_pieces)]
  assert stores_of(pieces) == stores
  assert stores_of(pieces[:-1]) is None and stores_of(pieces[1:]) is None
  assert stores_of(pieces[3:] + pieces[:3]) == stores[1:] + stores[:1]
  assert stores_of([Piece("d", np.asarray(arrays[0][0]))]) is None
  assert isinstance(batches_lib.sparse_store(pieces), ShardedFrames)
  # Statistics read from the stores are those of the frames made dense.
  assert stats_lib.dataset_statistics(pieces) == stats_lib.dataset_statistics(
      [a for group in arrays for a in group])


def _sharded(tmp_path, music, **kw):
  return DataConfig(dataset="midi_dir", data_dir=str(music), cache_dir=str(tmp_path / "cache"),
                    valid_fraction=0.25, test_fraction=0.25, num_workers=1, **kw)


def test_a_sharded_corpus_has_the_pieces_and_batches_of_one_cache(tmp_path):
  music = tmp_path / "music"
  _midi_folder(music, count=9)
  one = load_dataset(_sharded(tmp_path, music))
  sharded = load_dataset(_sharded(tmp_path, music, shard_files=2))
  assert sharded.summary["num_shards"] == 5 and not sharded.summary["cache_hit"]
  for key in ("num_pieces", "num_frames", "num_notes", "pieces_per_split", "frames_per_split"):
    assert sharded.summary[key] == one.summary[key], key
  for split in ("train", "valid", "test"):
    assert [p.name for p in sharded[split]] == [p.name for p in one[split]]
    for a, b in zip(one[split], sharded[split]):
      np.testing.assert_array_equal(a.frames, b.frames)
  assert len({id(p.sparse[0]) for p in sharded.train}) > 1  # several shards' stores
  for kind in (WindowBatches, StreamBatches):
    a = kind(one.train, 6, 4, seed=2, transpose_range=3)
    b = kind(sharded.train, 6, 4, seed=2, transpose_range=3)
    for step in (0, 5):
      for key, value in a.train_batch(step).items():
        np.testing.assert_array_equal(b.train_batch(step)[key], value)
  again = load_dataset(_sharded(tmp_path, music, shard_files=2))
  assert again.summary["cache_hit"] and again.summary["num_encoded"] == 0


def test_sharded_encoding_resumes_and_redoes_only_changed_shards(tmp_path, monkeypatch):
  from musicgen_jax.data import shards  # pylint: disable=g-import-not-at-top
  music = tmp_path / "music"
  _midi_folder(music, count=8)
  cfg = _sharded(tmp_path, music, shard_files=3)
  written = []
  real = shards.write_shard

  def interrupted(cfg, files, folder):
    if written:  # the second shard is interrupted mid-way
      raise KeyboardInterrupt
    written.append(folder)
    return real(cfg, files, folder)

  monkeypatch.setattr(shards, "write_shard", interrupted)
  with pytest.raises(KeyboardInterrupt):
    load_dataset(cfg)
  root = pathlib.Path(written[0]).parent
  assert sorted(p.name for p in root.iterdir()) == [pathlib.Path(written[0]).name]  # no tmp
  encoded = []
  monkeypatch.setattr(shards, "write_shard",
                      lambda c, files, folder: encoded.append(len(files)) or real(c, files, folder))
  first = load_dataset(cfg)
  assert encoded == [3, 2] and first.summary["num_encoded"] == 5  # the first shard kept
  _midi_folder(music, count=1, seed=4)  # p0.mid, in the first shard, rewritten
  encoded.clear()
  second = load_dataset(cfg)
  assert encoded == [3] and second.summary["num_encoded"] == 3
  assert len(list(root.iterdir())) == 3  # the first shard's old version removed
  p0 = next(p for s in ("train", "valid", "test") for p in second[s] if p.name == "p0.mid")
  from musicgen_jax.data import encode_file  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(p0.frames, encode_file(cfg, str(music / "p0.mid"))[0])


def test_a_share_of_the_shards_opens_only_their_training_stores(tmp_path, monkeypatch):
  music = tmp_path / "music"
  _midi_folder(music, count=10)
  cfg = _sharded(tmp_path, music, shard_files=2)
  whole = load_dataset(cfg)
  opened = []
  real = SparseFrames.open
  monkeypatch.setattr(SparseFrames, "open",
                      classmethod(lambda cls, folder: opened.append(folder) or real(folder)))
  share = load_dataset(cfg, train_shards=lambda k: k % 2 == 1)
  assert {int(pathlib.Path(f).parent.name.split("-")[1]) % 2 for f in opened
          if f.endswith("train")} == {1}
  assert share.shard_of_train and all(k % 2 == 1 for k in share.shard_of_train)
  kept = [p.name for p, k in zip(whole.train, whole.shard_of_train) if k % 2 == 1]
  assert [p.name for p in share.train] == kept
  assert [p.name for p in share.valid] == [p.name for p in whole.valid]

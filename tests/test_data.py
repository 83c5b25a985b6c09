"""Tests of the dataset layer: sources, splits, cache, batches, statistics, flags."""

import dataclasses
import json
import multiprocessing
import os
import pathlib
import subprocess
import sys

from absl import flags
import mido
import numpy as np
import pytest

from musicgen_jax import encoding
from musicgen_jax import prepare
from musicgen_jax.data import batches as batches_lib
from musicgen_jax.data import config as config_lib
from musicgen_jax import settings
from musicgen_jax.data import pipeline
from musicgen_jax.data import sources
from musicgen_jax.data import splits as splits_lib
from musicgen_jax.data import stats as stats_lib

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TPB = 480


def write_midi(path, notes, *, ticks_per_beat=TPB):
  """Writes a one-track MIDI file of (pitch, start_quarter, quarters) notes."""
  events = []
  for pitch, start, length in notes:
    events.append((round(start * ticks_per_beat), 1, "note_on", pitch, 80))
    events.append((round((start + length) * ticks_per_beat), 0, "note_off",
                   pitch, 0))
  events.sort()
  track = mido.MidiTrack()
  now = 0
  for tick, _, kind, pitch, velocity in events:
    track.append(mido.Message(kind, note=pitch, velocity=velocity,
                              time=tick - now))
    now = tick
  midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
  midi.tracks.append(track)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  midi.save(path)


def scale(first_pitch, length=8):
  """A rising line of quarter notes."""
  return [(first_pitch + i, float(i), 1.0) for i in range(length)]


def make_config(tmp_path, data_dir, **kwargs):
  kwargs.setdefault("num_workers", 1)
  return config_lib.DataConfig(dataset="midi_dir", data_dir=str(data_dir),
                               cache_dir=str(tmp_path / "cache"), **kwargs)


def all_pieces(dataset):
  return {p.name: p for s in splits_lib.SPLITS for p in dataset.splits[s]}


def fail_encoding(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("encode_midi called on a cache hit")
  monkeypatch.setattr(encoding, "encode_midi", fail)


def count_encoding(monkeypatch):
  calls = []
  real = encoding.encode_midi

  def counting(source, **kwargs):
    calls.append(kwargs.get("name"))
    return real(source, **kwargs)
  monkeypatch.setattr(encoding, "encode_midi", counting)
  return calls


# --------------------------------------------------------------------------
# DataConfig and flags


@pytest.mark.parametrize("kwargs, message", [
    ({"dataset": "mp3"}, "--dataset"),
    ({"dataset": "midi_dir"}, "--data_dir"),
    ({"dataset": "json"}, "--data_path"),
    ({"steps_per_quarter": 0}, "--steps_per_quarter"),
    ({"duration_mode": "beats"}, "--duration_mode"),
    ({"valid_fraction": 0.6, "test_fraction": 0.5}, "sum below 1"),
    ({"test_fraction": -0.1}, "--test_fraction"),
    ({"num_workers": -1}, "--num_workers"),
])
def test_config_errors_say_what_to_change(kwargs, message):
  with pytest.raises(ValueError, match=message):
    config_lib.DataConfig(**kwargs)


def test_default_cache_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(config_lib.CACHE_DIR_ENV, str(tmp_path))
  assert config_lib.DataConfig().cache_dir == str(tmp_path)
  monkeypatch.delenv(config_lib.CACHE_DIR_ENV)
  assert config_lib.DataConfig().cache_dir.endswith(
      os.path.join(".cache", "musicgen_jax"))


def test_flags_make_a_config(tmp_path):
  flag_values = flags.FlagValues()
  settings.define_flags(config_lib.DataConfig, flag_values)
  settings.define_flags(config_lib.DataConfig, flag_values)  # a second call is a no-op
  flag_values([
      "prog", "--dataset=midi_dir", f"--data_dir={tmp_path}",
      "--steps_per_quarter=4", "--duration_mode=note", "--include_drums",
      "--valid_fraction=0.2", "--test_fraction=0.05",
      f"--cache_dir={tmp_path}/c", "--num_workers=3", "--max_files=7"])
  cfg = settings.from_flags(config_lib.DataConfig, flag_values)
  assert cfg == config_lib.DataConfig(
      dataset="midi_dir", data_dir=str(tmp_path), steps_per_quarter=4,
      duration_mode="note", include_drums=True, valid_fraction=0.2,
      test_fraction=0.05, cache_dir=f"{tmp_path}/c", num_workers=3, max_files=7)
  # Every field is a flag with help, and the cache folder defaults at run time.
  for field in dataclasses.fields(config_lib.DataConfig):
    assert flag_values[field.name].help, field.name
  defaults = flags.FlagValues()
  settings.define_flags(config_lib.DataConfig, defaults)
  defaults(["prog"])
  assert settings.from_flags(config_lib.DataConfig, defaults) == config_lib.DataConfig()


# --------------------------------------------------------------------------
# midi_dir source


def test_midi_dir_is_recursive_and_reads_midi_extension(tmp_path):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60))
  write_midi(str(data / "sub" / "deeper" / "b.midi"), scale(50, 5))
  write_midi(str(data / "sub" / "C.MID"), scale(70, 3))
  (data / "notes.txt").write_text("not music")
  dataset = pipeline.load_dataset(make_config(tmp_path, data))
  pieces = all_pieces(dataset)
  assert sorted(pieces) == ["a.mid", "sub/C.MID", "sub/deeper/b.midi"]
  # New runs' frames: note lengths and metre columns (encoding.FrameLayout).
  assert pieces["sub/deeper/b.midi"].frames.shape == (
      5, encoding.FrameLayout(lengths=True, metre=True).width)
  assert pieces["sub/deeper/b.midi"].frames.dtype == np.float32
  np.testing.assert_array_equal(pieces["a.mid"].frames, encoding.add_metre(
      encoding.midi_to_frames(str(data / "a.mid"), note_lengths=True, sustain_pedal="apply")))
  assert dataset.summary["num_files"] == 3
  assert dataset.skipped == []


def test_bad_file_is_skipped_with_name_and_reason(tmp_path, caplog):
  data = tmp_path / "midi"
  write_midi(str(data / "good1.mid"), scale(60))
  write_midi(str(data / "good2.mid"), scale(62))
  (data / "broken.mid").write_bytes(b"this is not a MIDI file")
  dataset = pipeline.load_dataset(make_config(tmp_path, data))
  assert sorted(all_pieces(dataset)) == ["good1.mid", "good2.mid"]
  assert len(dataset.skipped) == 1
  name, reason = dataset.skipped[0]
  assert name == "broken.mid"
  assert "broken.mid" in reason and "not a MIDI file" in reason
  assert dataset.summary["num_skipped"] == 1
  assert any("broken.mid" in r.getMessage() for r in caplog.records
             if r.levelname == "WARNING")


def test_progress_is_logged(tmp_path, caplog):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60))
  write_midi(str(data / "b.mid"), scale(50))
  caplog.set_level("INFO")
  pipeline.load_dataset(make_config(tmp_path, data), progress_interval_s=0.0)
  messages = [r.getMessage() for r in caplog.records]
  assert any("1/2 files" in m and "ETA" in m for m in messages)
  assert any("2/2 files, 16 frames" in m for m in messages)


def test_unexpected_encoder_error_names_the_file(tmp_path, monkeypatch):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60))

  def broken(*args, **kwargs):
    raise KeyError("bug")
  monkeypatch.setattr(encoding, "encode_midi", broken)
  with pytest.raises(RuntimeError, match="a.mid"):
    pipeline.load_dataset(make_config(tmp_path, data))


def test_folder_without_midi_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("no music here")
  with pytest.raises(ValueError, match="no .mid/.midi files found below"):
    pipeline.load_dataset(make_config(tmp_path, tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="--data_dir"):
    pipeline.load_dataset(make_config(tmp_path, tmp_path / "missing"))


def test_only_bad_files_is_a_clear_error(tmp_path):
  data = tmp_path / "midi"
  data.mkdir()
  (data / "x.mid").write_bytes(b"MThd")
  write_midi(str(data / "low.mid"), [(5, 0.0, 1.0)])  # below pitch 21 only
  with pytest.raises(ValueError, match="no usable music"):
    pipeline.load_dataset(make_config(tmp_path, data))


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_worker_processes_give_the_same_result(tmp_path, monkeypatch, method):
  if method not in multiprocessing.get_all_start_methods():
    pytest.skip(f"no {method} on this platform")
  monkeypatch.setattr(pipeline, "start_method", lambda: method)
  data = tmp_path / "midi"
  for i in range(4):
    write_midi(str(data / f"p{i}.mid"), scale(40 + i, 6 + i))
  (data / "bad.mid").write_bytes(b"junk")
  one = pipeline.load_dataset(make_config(tmp_path, data))
  two = pipeline.load_dataset(config_lib.DataConfig(
      dataset="midi_dir", data_dir=str(data), num_workers=2,
      cache_dir=str(tmp_path / "cache2")))
  assert not two.summary["cache_hit"]
  assert one.skipped == two.skipped
  for name, piece in all_pieces(one).items():
    np.testing.assert_array_equal(piece.frames, all_pieces(two)[name].frames)


# --------------------------------------------------------------------------
# json source


def test_json_source_uses_given_splits(tmp_path):
  path = tmp_path / "bench.json"
  path.write_text(json.dumps({
      "train": [[[60, 64, 67], [], [62]], [[10, 60], [60, 130]]],
      "valid": [[[21], [126]]],
      "test": [[[55.0, 59]]],
  }))
  dataset = pipeline.load_dataset(config_lib.DataConfig(
      dataset="json", data_path=str(path), cache_dir=str(tmp_path / "c")))
  assert [p.name for p in dataset.train] == ["train/0000", "train/0001"]
  assert [p.name for p in dataset.valid] == ["valid/0000"]
  assert [p.name for p in dataset.test] == ["test/0000"]
  first = dataset.train[0].frames
  layout = encoding.FrameLayout(metre=True)  # no lengths in a json benchmark; a bar of 4 steps
  assert first.shape == (3, layout.width)
  np.testing.assert_array_equal(first[:, encoding.DURATION_INDEX], 1.0)
  np.testing.assert_array_equal(first[:, layout.metre_columns], [[0, 4], [1, 4], [2, 4]])
  assert np.nonzero(first[0, :encoding.NUM_NOTES])[0].tolist() == [39, 43, 46]
  assert not first[1, :encoding.NUM_NOTES].any()  # an empty time step: a rest
  second = dataset.train[1].frames
  assert second[:, :encoding.NUM_NOTES].sum() == 2  # 10 and 130 dropped
  assert dataset.summary["dropped_out_of_range"] == 2
  valid = dataset.valid[0].frames
  assert valid[0, 0] == 1 and valid[1, encoding.NUM_NOTES - 1] == 1
  # Split fractions do not apply to json.
  again = pipeline.load_dataset(config_lib.DataConfig(
      dataset="json", data_path=str(path), cache_dir=str(tmp_path / "c"),
      valid_fraction=0.5))
  assert again.summary["cache_hit"]
  assert [p.name for p in again.valid] == ["valid/0000"]


def test_json_source_errors(tmp_path):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps({"pieces": []}))
  with pytest.raises(ValueError, match="'train', 'valid', 'test'"):
    pipeline.load_dataset(config_lib.DataConfig(
        dataset="json", data_path=str(path), cache_dir=str(tmp_path / "c")))
  path.write_text(json.dumps({"train": [[["C4"]]], "valid": [], "test": []}))
  with pytest.raises(ValueError, match="train/0000"):
    pipeline.load_dataset(config_lib.DataConfig(
        dataset="json", data_path=str(path), cache_dir=str(tmp_path / "c")))


# --------------------------------------------------------------------------
# splits


def test_split_assignment_is_deterministic_with_expected_fractions():
  names = [f"composer/piece_{i}.mid" for i in range(4000)]
  first = [splits_lib.assign_split(n, 0.1, 0.2) for n in names]
  assert first == [splits_lib.assign_split(n, 0.1, 0.2) for n in names]
  counts = {s: first.count(s) / len(names) for s in splits_lib.SPLITS}
  assert abs(counts["valid"] - 0.1) < 0.02
  assert abs(counts["test"] - 0.2) < 0.025
  # A piece's bucket does not depend on the other files.
  assert splits_lib.split_bucket("a/b.mid") == splits_lib.split_bucket(
      "a\\b.mid")
  assert 0.0 <= splits_lib.split_bucket("x.mid") < 1.0


def test_adding_files_does_not_move_existing_pieces(tmp_path, monkeypatch):
  data = tmp_path / "midi"
  for i in range(12):
    write_midi(str(data / f"p{i:02d}.mid"), scale(40 + i, 3))
  cfg = make_config(tmp_path, data, valid_fraction=0.3, test_fraction=0.3)
  before = pipeline.load_dataset(cfg)
  where = {p.name: s for s in splits_lib.SPLITS for p in before.splits[s]}
  assert len(set(where.values())) == 3
  for i in range(12, 20):
    write_midi(str(data / "new" / f"q{i:02d}.mid"), scale(40 + i, 3))
  calls = count_encoding(monkeypatch)
  after = pipeline.load_dataset(cfg)
  assert len(calls) == 8  # only the new files are encoded
  assert after.summary["num_cached"] == 12
  where_after = {p.name: s for s in splits_lib.SPLITS for p in after.splits[s]}
  assert len(where_after) == 20
  for name, split in where.items():
    assert where_after[name] == split


# --------------------------------------------------------------------------
# cache


def test_second_load_is_a_cache_hit_without_encoding(tmp_path, monkeypatch):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60))
  write_midi(str(data / "b.mid"), scale(48, 4))
  (data / "bad.mid").write_bytes(b"garbage")
  cfg = make_config(tmp_path, data)
  first = pipeline.load_dataset(cfg)
  assert not first.summary["cache_hit"]
  cache_files = [f for f in (tmp_path / "cache").iterdir() if ".mapped-" not in f.name]
  assert [f.suffix for f in cache_files] == [".npz"]
  mapped = [f for f in (tmp_path / "cache").iterdir() if ".mapped-" in f.name]
  assert len(mapped) == 1 and mapped[0].is_dir()  # the splits, memory-mapped next time
  with np.load(cache_files[0], allow_pickle=False) as z:
    assert "meta" in z.files
  fail_encoding(monkeypatch)
  second = pipeline.load_dataset(cfg)
  assert second.summary["cache_hit"]
  assert second.summary["num_encoded"] == 0
  assert second.skipped == first.skipped
  for name, piece in all_pieces(first).items():
    np.testing.assert_array_equal(piece.frames, all_pieces(second)[name].frames)
  # Split fractions are applied after loading: no re-encoding either.
  third = pipeline.load_dataset(make_config(tmp_path, data, valid_fraction=0.5))
  assert third.summary["cache_hit"]


@pytest.mark.parametrize("change", [
    {"steps_per_quarter": 4}, {"duration_mode": "note"},
    {"include_drums": True}])
def test_changed_setting_re_encodes(tmp_path, monkeypatch, change):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60, 4))
  pipeline.load_dataset(make_config(tmp_path, data))
  calls = count_encoding(monkeypatch)
  changed = pipeline.load_dataset(make_config(tmp_path, data, **change))
  assert calls == ["a.mid"]
  assert not changed.summary["cache_hit"]


def test_changed_file_re_encodes_only_that_file(tmp_path, monkeypatch):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60, 4))
  write_midi(str(data / "b.mid"), scale(30, 4))
  cfg = make_config(tmp_path, data)
  pipeline.load_dataset(cfg)
  write_midi(str(data / "a.mid"), scale(60, 6))
  stat = os.stat(data / "a.mid")
  os.utime(data / "a.mid", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  calls = count_encoding(monkeypatch)
  changed = pipeline.load_dataset(cfg)
  assert calls == ["a.mid"]
  assert all_pieces(changed)["a.mid"].num_frames == 6
  # A removed file disappears from the dataset and the cache.
  os.unlink(data / "b.mid")
  fail_encoding(monkeypatch)
  assert sorted(all_pieces(pipeline.load_dataset(cfg))) == ["a.mid"]


def test_max_files_keeps_the_rest_of_the_cache(tmp_path, monkeypatch):
  data = tmp_path / "midi"
  for i in range(4):
    write_midi(str(data / f"p{i}.mid"), scale(50 + i, 4))
  full = pipeline.load_dataset(make_config(tmp_path, data))
  calls = count_encoding(monkeypatch)
  some = pipeline.load_dataset(make_config(tmp_path, data, max_files=2))
  assert sorted(all_pieces(some)) == ["p0.mid", "p1.mid"]
  write_midi(str(data / "p1.mid"), scale(60, 5))  # changed: re-encoded
  stat = os.stat(data / "p1.mid")
  os.utime(data / "p1.mid", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  pipeline.load_dataset(make_config(tmp_path, data, max_files=2))
  assert calls == ["p1.mid"]
  again = pipeline.load_dataset(make_config(tmp_path, data))
  assert again.summary["cache_hit"] and calls == ["p1.mid"]
  assert sorted(all_pieces(again)) == sorted(all_pieces(full))


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60, 4))
  cfg = make_config(tmp_path, data)
  first = pipeline.load_dataset(cfg)
  path = pathlib.Path(first.summary["cache_path"])
  path.write_bytes(path.read_bytes()[:100])  # as if killed while writing
  rebuilt = pipeline.load_dataset(cfg)
  assert not rebuilt.summary["cache_hit"]
  assert any("unreadable" in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(all_pieces(rebuilt)["a.mid"].frames,
                                all_pieces(first)["a.mid"].frames)
  assert pipeline.load_dataset(cfg).summary["cache_hit"]
  assert _cache_folder(path) == [path.name]  # no tmp left


def test_cache_write_is_atomic(tmp_path, monkeypatch):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60, 4))
  cfg = make_config(tmp_path, data)
  good = pipeline.load_dataset(cfg)
  path = pathlib.Path(good.summary["cache_path"])
  before = path.read_bytes()

  def killed(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(np, "savez", killed)
  write_midi(str(data / "b.mid"), scale(30, 4))
  with pytest.raises(KeyboardInterrupt):
    pipeline.load_dataset(cfg)
  assert path.read_bytes() == before
  assert _cache_folder(path) == [path.name]


def _cache_folder(path) -> list[str]:
  """The cache folder's files but its one mapped-splits folder; fails on anything temporary."""
  names = [p.name for p in path.parent.iterdir()]
  assert not any(".tmp" in n for n in names), names
  assert sum(".mapped-" in n for n in names) <= 1, names
  return [n for n in names if ".mapped-" not in n]


# --------------------------------------------------------------------------
# bach_chorales


def test_bach_chorales_source(tmp_path, monkeypatch):
  pytest.importorskip("music21")
  cfg = config_lib.DataConfig(dataset="bach_chorales", max_files=2,
                              num_workers=1, cache_dir=str(tmp_path / "c"))
  dataset = pipeline.load_dataset(cfg)
  pieces = all_pieces(dataset)
  assert len(pieces) == 2
  for name, piece in pieces.items():
    assert name.startswith("bach/")
    assert piece.num_frames > 20
    polyphony = piece.frames[:, :encoding.NUM_NOTES].sum(axis=1)
    assert polyphony.max() >= 3  # four-part chorales
  fail_encoding(monkeypatch)
  assert pipeline.load_dataset(cfg).summary["cache_hit"]


def test_a_chorales_pickup_is_leading_silence():
  music21 = pytest.importorskip("music21")
  path = next(f.path for f in sources.list_bach_chorales() if f.name == "bach/bwv66.6.mxl")
  score = music21.converter.parse(path)
  pickup = float(score.parts[0].getElementsByClass("Measure")[0].paddingLeft)
  assert pickup == 3.0  # a one-beat pickup in 4/4
  frames, stats = encoding.encode_midi(sources.chorale_midi_bytes(path))
  assert stats.start_step == 36 and stats.time_signature == "4/4"
  metre = encoding.add_metre(frames, stats.time_signature, 12, stats.start_step)
  elapsed = np.concatenate([[0.0], np.cumsum(frames[:-1, encoding.DURATION_INDEX])])
  np.testing.assert_array_equal(metre[:, -2], (3.0 + elapsed) % 4.0)  # the pickup on beat 4
  assert metre[0, -2] == 3.0 and 0.0 in metre[:4, -2]


def test_music21_corpus_by_collection_one_piece_per_tune(tmp_path):
  pytest.importorskip("music21")
  listed = sources.list_music21_corpus("EssenFolksong")  # case-insensitive
  assert len(listed) > 1000 and all(f.name.startswith("essenFolksong/") for f in listed)
  tune = next(f for f in listed if f.name == "essenFolksong/altdeu10.abc#104")
  assert tune.number == 104 and tune.signature[-1] == 104
  # a tune whose bars share one TimeSignature object (music21's export refused it)
  piece, reason = sources.encode_source_file("music21_corpus", tune, dict(
      config_lib.DataConfig().encoding_settings))
  assert reason is None and piece.num_frames > 20
  cfg = config_lib.DataConfig(dataset="music21_corpus", corpus="essenFolksong,schoenberg",
                              max_files=3, num_workers=1, cache_dir=str(tmp_path / "c"))
  dataset = pipeline.load_dataset(cfg)
  assert sorted(all_pieces(dataset)) == [f.name for f in listed[:3]]
  assert dataset.summary["collections"] == {"essenFolksong": {
      "pieces": 3, "frames": dataset.summary["num_frames"], "skipped": 0}}
  notes = dataset.summary["licence_notes"]
  assert sorted(notes) == ["corpus", "essenFolksong"]
  assert "non-commercial" in open(notes["essenFolksong"], encoding="utf-8").read()
  from musicgen_jax import prepare  # pylint: disable=g-import-not-at-top
  report = prepare.format_report(prepare.prepare_statistics(dataset))
  assert f"essenFolksong            3 {dataset.summary['num_frames']:>9d}        0" in report
  assert f"licence note (essenFolksong): {notes['essenFolksong']}" in report
  with pytest.raises(ValueError, match="not a collection of music21's corpus; choose from "
                     ".*palestrina"):
    sources.list_music21_corpus("palestrina,nosuchcomposer")


def test_bach_chorales_without_music21_says_how_to_install(monkeypatch):
  import builtins  # pylint: disable=g-import-not-at-top
  real_import = builtins.__import__

  def no_music21(name, *args, **kwargs):
    if name == "music21" or name.startswith("music21."):
      raise ImportError("No module named 'music21'")
    return real_import(name, *args, **kwargs)
  monkeypatch.setattr(builtins, "__import__", no_music21)
  with pytest.raises(ImportError, match=r"musicgen-jax\[corpus\]"):
    sources.list_bach_chorales()


# --------------------------------------------------------------------------
# batches


def random_piece(rng, length, low=10, high=90):
  frames = np.zeros((length, encoding.FRAME_DIM), np.float32)
  pitches = rng.integers(low, high, size=(length, 3))
  np.put_along_axis(frames, pitches, 1.0, axis=1)
  frames[rng.random(length) < 0.1, :encoding.NUM_NOTES] = 0.0  # some rests
  frames[:, encoding.DURATION_INDEX] = rng.integers(1, 24, size=length) / 12
  return frames


def make_pieces(lengths, seed=0, **kwargs):
  rng = np.random.default_rng(seed)
  return [pipeline.Piece(f"p{i}", random_piece(rng, n, **kwargs))
          for i, n in enumerate(lengths)]


def test_batches_are_a_function_of_seed_and_step():
  pieces = make_pieces([50, 80, 33, 200])
  sampler = batches_lib.WindowBatches(pieces, seq_len=16, global_batch_size=8,
                                     seed=3)
  batch = sampler.batch(5)
  assert batch.shape == (8, 17, encoding.FRAME_DIM)
  assert batch.dtype == np.float32
  # No iterator state: any order of calls, or a new sampler, gives the same.
  sampler.batch(0)
  sampler.batch(99)
  np.testing.assert_array_equal(sampler.batch(5), batch)
  fresh = batches_lib.WindowBatches(pieces, seq_len=16, global_batch_size=8,
                                   seed=3)
  np.testing.assert_array_equal(fresh.batch(5), batch)
  assert not np.array_equal(sampler.batch(6), batch)
  other_seed = batches_lib.WindowBatches(pieces, seq_len=16,
                                        global_batch_size=8, seed=4)
  assert not np.array_equal(other_seed.batch(5), batch)


def test_batch_rows_are_windows_of_the_pieces():
  pieces = make_pieces([40, 25, 60])
  sampler = batches_lib.WindowBatches(pieces, seq_len=9, global_batch_size=64,
                                     seed=0)
  windows = {}
  for p in pieces:
    for start in range(p.num_frames - 9):
      windows[p.frames[start:start + 10].tobytes()] = (p.name, start)
  seen = set()
  for step in range(40):
    for row in sampler.batch(step):
      seen.add(windows[row.tobytes()])
  assert sampler.num_windows == len(windows) == 31 + 16 + 51
  assert len(seen) == len(windows)  # every start is drawn


def test_process_slices_concatenate_to_the_global_batch():
  pieces = make_pieces([70, 90, 45])
  kwargs = dict(seq_len=12, global_batch_size=6, seed=11, transpose_range=4)
  whole = batches_lib.WindowBatches(pieces, **kwargs)
  parts = [batches_lib.WindowBatches(pieces, process_index=p, process_count=2,
                                    **kwargs) for p in range(2)]
  for step in (0, 1, 17):
    halves = [part.batch(step) for part in parts]
    assert halves[0].shape == (3, 13, encoding.FRAME_DIM)
    np.testing.assert_array_equal(np.concatenate(halves), whole.batch(step))
  with pytest.raises(ValueError, match="multiple of 4"):
    batches_lib.WindowBatches(pieces, seq_len=12, global_batch_size=6, seed=0,
                             process_count=4)


def test_transposition_only_shifts_notes_and_keeps_them_in_range():
  # Notes reach both ends of the range in some windows.
  pieces = make_pieces([300, 300], low=0, high=encoding.NUM_NOTES)
  pieces += make_pieces([300], seed=1, low=40, high=60)
  plain = batches_lib.WindowBatches(pieces, seq_len=8, global_batch_size=256,
                                   seed=5)
  moved = batches_lib.WindowBatches(pieces, seq_len=8, global_batch_size=256,
                                   seed=5, transpose_range=6)
  shifts_seen = set()
  for step in range(3):
    original, shifted = plain.batch(step), moved.batch(step)
    np.testing.assert_array_equal(original[..., encoding.DURATION_INDEX],
                                  shifted[..., encoding.DURATION_INDEX])
    for a, b in zip(original, shifted):
      notes_a = a[:, :encoding.NUM_NOTES]
      notes_b = b[:, :encoding.NUM_NOTES]
      assert notes_a.sum() == notes_b.sum()  # no note lost off the edge
      matches = [s for s in range(-6, 7)
                 if np.array_equal(np.roll(notes_a, s, axis=1), notes_b)]
      assert matches, "the window's notes are not a transposition"
      shifts_seen.add(matches[0] if len(matches) == 1 else 0)
  assert shifts_seen >= {-6, 0, 6}


def test_allowed_shifts_respect_the_range():
  notes = np.zeros((3, encoding.NUM_NOTES), bool)
  notes[0, [0, 50]] = True
  notes[1, [3, encoding.NUM_NOTES - 2]] = True
  low, high = batches_lib.allowed_shifts(notes, 5)
  assert low.tolist() == [0, -3, -5]
  assert high.tolist() == [5, 1, 5]


def test_short_pieces_are_skipped_and_counted():
  pieces = make_pieces([5, 30, 10, 11])
  sampler = batches_lib.WindowBatches(pieces, seq_len=10, global_batch_size=4,
                                     seed=0)
  assert sampler.num_short_pieces == 2
  assert sampler.num_pieces == 2
  assert sampler.num_windows == 20 + 1
  with pytest.raises(ValueError, match="lower --seq_len"):
    batches_lib.WindowBatches(make_pieces([5, 8]), seq_len=10,
                             global_batch_size=4, seed=0)


# --------------------------------------------------------------------------
# statistics and the prepare program


def test_dataset_statistics_on_known_frames():
  frames = np.zeros((4, encoding.FRAME_DIM), np.float32)
  frames[0, [39, 43]] = 1  # C4 + E4
  frames[2, 60] = 1
  frames[3, [0, 1, 2]] = 1
  frames[:, encoding.DURATION_INDEX] = [0.25, 1.0, 0.5, 6.0]
  stats = stats_lib.dataset_statistics([frames])
  assert stats["num_frames"] == 4 and stats["num_notes"] == 6
  assert stats["pitch_min"] == 21 and stats["pitch_max"] == 81
  assert stats["mean_polyphony"] == pytest.approx(2.0)
  assert stats["rest_rate"] == pytest.approx(0.25)
  histogram = dict(stats["duration_histogram"])
  assert histogram["1/8 - 1/4"] == 1 and histogram["1/4 - 1/2"] == 1
  assert histogram["1/2 - 1"] == 1 and histogram["> 4"] == 1
  json.dumps(stats)  # JSON-ready


def test_prepare_report(tmp_path):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60))
  (data / "bad.mid").write_bytes(b"nope")
  dataset = pipeline.load_dataset(make_config(tmp_path, data))
  report = prepare.format_report(prepare.prepare_statistics(dataset))
  for text in ("pieces", "polyphony", "rest rate", "bad.mid", "C4",
               "cache: built"):
    assert text in report
  assert encoding.pitch_name(21) == "A0" and encoding.pitch_name(60) == "C4"


def test_prepare_command_line(tmp_path):
  data = tmp_path / "midi"
  write_midi(str(data / "a.mid"), scale(60))
  command = [sys.executable, "-m", "musicgen_jax.prepare", "--dataset=midi_dir",
             f"--data_dir={data}", f"--cache_dir={tmp_path / 'c'}",
             f"--stats_json={tmp_path / 'stats.json'}"]
  repo_root = str(pathlib.Path(__file__).resolve().parents[1])
  env = dict(os.environ, PYTHONPATH=repo_root)
  first = subprocess.run(command, capture_output=True, text=True, env=env,
                         cwd=repo_root, check=True)
  assert "cache: built" in first.stdout and "polyphony" in first.stdout
  second = subprocess.run(command, capture_output=True, text=True, env=env,
                          cwd=repo_root, check=True)
  assert "cache: hit" in second.stdout
  stats = json.loads((tmp_path / "stats.json").read_text())
  assert stats["all"]["num_frames"] == 8
  bad = subprocess.run(command[:4] + [f"--cache_dir={tmp_path / 'c'}"],
                       capture_output=True, text=True, env=env, cwd=repo_root)
  assert bad.returncode != 0 and "--data_dir" in bad.stderr + bad.stdout


# --------------------------------------------------------------------------
# the shared data (skipped where ../shared is absent)


@pytest.mark.skipif(not (SHARED_DATA / "piano-midi").is_dir(),
                    reason="../shared/data/piano-midi is absent")
def test_piano_midi_subset(tmp_path):
  cfg = config_lib.DataConfig(
      dataset="midi_dir", data_dir=str(SHARED_DATA / "piano-midi"),
      max_files=3, num_workers=1, cache_dir=str(tmp_path / "c"))
  dataset = pipeline.load_dataset(cfg)
  assert dataset.summary["num_pieces"] + dataset.summary["num_skipped"] == 3
  assert dataset.summary["num_frames"] > 1000


@pytest.mark.skipif(
    not (SHARED_DATA / "benchmarks" / "jsb_chorales.json").is_file(),
    reason="../shared/data/benchmarks is absent")
def test_jsb_chorales_benchmark(tmp_path):
  dataset = pipeline.load_dataset(config_lib.DataConfig(
      dataset="json", data_path=str(SHARED_DATA / "benchmarks" /
                                    "jsb_chorales.json"),
      cache_dir=str(tmp_path / "c")))
  assert dataset.summary["pieces_per_split"] == {
      "train": 229, "valid": 76, "test": 77}
  assert dataset.summary["dropped_out_of_range"] == 0

"""Bad input of every kind: mutated MIDI, broken corpora, hostile caches, wrong flags."""

import glob
import os
import pathlib
import random
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from musicgen_jax import MidiError, encode_midi, frames_to_midi, midi_to_frames
from musicgen_jax.data import DataConfig, assign_split, load_dataset
from test_midi_errors import _mutate as mutate_synthetic
from toy import STUDY_FRAME, toy_frames

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "piano-midi"
# The smallest real files (3-5 KB): many mutations each within the suite's time.
REAL_FILES = ["chpn-p20.mid", "chpn-p10.mid", "chpn-p9.mid", "chpn-p11.mid", "chpn-p2.mid"]


def mutate(data: bytes, rng: random.Random) -> bytes:
  """Bit flips, truncation, a chunk length changed, bytes appended or overwritten."""
  data = bytearray(data)
  kind = rng.randrange(5)
  if kind == 0:
    for _ in range(rng.randint(1, 16)):
      i = rng.randrange(len(data))
      data[i] ^= 1 << rng.randrange(8)
  elif kind == 1:
    del data[rng.randrange(len(data)):]
  elif kind == 2:
    starts = [i for i in range(len(data) - 8) if data[i:i + 4] in (b"MThd", b"MTrk")]
    i = rng.choice(starts) + 4
    data[i:i + 4] = rng.choice([0, 1, 6, rng.randrange(2**16), rng.randrange(2**32),
                                2**32 - 1]).to_bytes(4, "big")
  elif kind == 3:
    data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
  else:
    for _ in range(rng.randint(1, 12)):
      data[rng.randrange(14, len(data))] = rng.randrange(256)
  return bytes(data)


def _fuzz(originals, count, seed, mutator, traced=200):
  """Mutates and decodes `count` files; memory is traced over the first `traced`."""
  rng = random.Random(seed)
  outcomes = {"ok": 0, "MidiError": 0}
  slowest, peak = 0.0, 0
  tracemalloc.start()
  try:
    for i in range(count):
      if i == traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
      data = mutator(originals[i % len(originals)], rng)
      start = time.perf_counter()
      try:
        frames = midi_to_frames(data)
        assert frames.ndim == 2 and frames.shape[1] == 107 and np.isfinite(frames).all()
        outcomes["ok"] += 1
      except MidiError as e:
        assert str(e).startswith("<MIDI data>: ")  # names the source and a reason
        outcomes["MidiError"] += 1
      slowest = max(slowest, time.perf_counter() - start)
    if tracemalloc.is_tracing():
      peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  return outcomes, slowest, peak


def test_thousands_of_mutated_real_files_only_raise_midierror():
  paths = [SHARED / name for name in REAL_FILES if (SHARED / name).exists()]
  if not paths:
    pytest.skip("../shared/data/piano-midi not present")
  originals = [p.read_bytes() for p in paths]
  outcomes, slowest, peak = _fuzz(originals, 2500, seed=7, mutator=mutate)
  assert outcomes["ok"] > 100 and outcomes["MidiError"] > 100, outcomes
  assert slowest < 2.0
  assert peak < 64 * 2**20


def test_thousands_of_mutated_generated_files_only_raise_midierror():
  originals = [_bytes(toy_frames(i, 60)) for i in range(4)]
  outcomes, slowest, peak = _fuzz(originals, 2000, seed=3, mutator=mutate)
  assert outcomes["ok"] > 100 and outcomes["MidiError"] > 100, outcomes
  assert slowest < 2.0 and peak < 64 * 2**20
  outcomes, _, _ = _fuzz(originals, 500, seed=4, mutator=mutate_synthetic)
  assert sum(outcomes.values()) == 500


def _bytes(frames):
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  frames_to_midi(frames).save(file=buffer)
  return buffer.getvalue()


def test_mutated_corpus_through_dataset_building(tmp_path):
  folder = tmp_path / "corpus"
  folder.mkdir()
  rng = random.Random(11)
  good = {}
  for i in range(6):
    data = _bytes(toy_frames(i, 40))
    (folder / f"good_{i}.mid").write_bytes(data)
    good[f"good_{i}.mid"] = midi_to_frames(data)
  expected_bad = {}
  for i in range(30):
    data = mutate(_bytes(toy_frames(100 + i, 40)), rng)
    name = f"mutant_{i:02d}.mid"
    (folder / name).write_bytes(data)
    try:
      frames, _ = encode_midi(data)
      if len(frames):
        good[name] = frames
      else:
        expected_bad[name] = "no notes"
    except MidiError as e:
      expected_bad[name] = str(e).split(": ", 1)[1]
  assert len(expected_bad) >= 5
  dataset = load_dataset(DataConfig(dataset="midi_dir", data_dir=str(folder),
                                    cache_dir=str(tmp_path / "cache"), num_workers=1,
                                    valid_fraction=0.0, test_fraction=0.0, **STUDY_FRAME))
  loaded = {p.name: p.frames for split in ("train", "valid", "test") for p in dataset[split]}
  skipped = dict(dataset.skipped)
  assert set(loaded) | set(skipped) == set(good) | set(expected_bad)
  for name, reason in expected_bad.items():
    if reason != "no notes":
      assert name in skipped and reason in skipped[name], (name, skipped.get(name))
  for name, frames in good.items():
    np.testing.assert_array_equal(loaded[name], frames)


class _Alarm:
  """Unpickling this object would record it: proof that the cache was unpickled."""
  fired = False

  def __reduce__(self):
    return (_fire, ())


def _fire():
  _Alarm.fired = True
  return "unpickled"


def test_hostile_cache_is_never_unpickled(tmp_path, caplog):
  folder = tmp_path / "corpus"
  folder.mkdir()
  for i in range(3):
    (folder / f"p{i}.mid").write_bytes(_bytes(toy_frames(i, 30)))
  cfg = DataConfig(dataset="midi_dir", data_dir=str(folder), cache_dir=str(tmp_path / "cache"),
                   num_workers=1, valid_fraction=0.0, test_fraction=0.0)
  first = load_dataset(cfg)
  (cache,) = glob.glob(str(tmp_path / "cache" / "*.npz"))
  hostile = np.array([_Alarm()], dtype=object)
  with open(cache, "wb") as f:
    np.savez(f, meta=hostile, rows=hostile)
  with caplog.at_level("WARNING"):
    second = load_dataset(cfg)
  assert not _Alarm.fired
  assert "unreadable" in caplog.text
  np.testing.assert_array_equal(second["train"][0].frames, first["train"][0].frames)


def _train_cli(*args, devices=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return subprocess.run([sys.executable, "-m", "musicgen_jax.train", *args],
                        capture_output=True, text=True, timeout=180, env=env)


def _error_line(proc):
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith(("error:", "FATAL"))]
  assert len(lines) == 1, proc.stderr[-2000:]
  return lines[0]


def test_flag_errors_say_what_to_change(tmp_path):
  folder = tmp_path / "one"
  folder.mkdir()
  # A single piece that the hash split puts in the test split: the train split is empty.
  name = next(f"piece_{i}.mid" for i in range(1000)
              if assign_split(f"piece_{i}.mid", 0.1, 0.1) == "test")
  (folder / name).write_bytes(_bytes(toy_frames(0, 30)))
  common = [f"--workdir={tmp_path}/w", "--dataset=midi_dir", f"--data_dir={folder}",
            f"--cache_dir={tmp_path}/cache", "--num_workers=1", "--num_steps=2"]
  line = _error_line(_train_cli(*common, "--model=gru"))
  assert "--model" in line and "lstm" in line
  line = _error_line(_train_cli(*common))
  assert "train split is empty" in line and "--test_fraction" in line
  (folder / "piece_train.mid").write_bytes(_bytes(toy_frames(1, 30)))
  line = _error_line(_train_cli(*common, "--batch_size=12", "--valid_fraction=0",
                                "--test_fraction=0", devices=8))
  assert "does not divide over 8 devices" in line and "--batch_size=8" in line

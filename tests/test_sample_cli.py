"""Sampling a trained workdir to MIDI: outputs, determinism, bad input, every model's path."""

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import generate as sample_lib
from musicgen_jax import plotting, sampling
from musicgen_jax import train as train_lib
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.encoding import FRAME_DIM, MidiError, frames_to_midi, midi_to_frames
from musicgen_jax.data import Piece
from musicgen_jax.models import apply_model, init_params, is_causal
from toy import toy_config, toy_dataset, toy_frames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRIME = 5  # prime frames in these tests (the toy models' seq_len is 8)
GENERATE = 12  # generated frames


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, prime MIDI path, dataset): one toy lstm trained for 2 steps."""
  root = tmp_path_factory.mktemp("sample")
  workdir = str(root / "lstm")
  dataset = toy_dataset()
  train_lib.train_and_evaluate(toy_config(num_steps=2, checkpoint_every=2, eval_every=0),
                               workdir, dataset=dataset)
  prime_midi = str(root / "prime.mid")
  frames_to_midi(toy_frames(300, 20)).save(prime_midi)
  return workdir, prime_midi, dataset


def _sample(workdir, out_dir, **kwargs):
  settings = dict(num_frames=GENERATE, num_samples=2, prime_frames=PRIME, plot=False)
  settings.update(kwargs)
  return sample_lib.sample_workdir(workdir, str(out_dir), **settings)


def test_writes_midi_json_and_png_with_the_held_out_prime(run, tmp_path):
  workdir, _, dataset = run
  result = _sample(workdir, tmp_path, num_samples=3, temperature=0.8, top_p=0.9, seed=3,
                   dataset=dataset, plot=True)
  prime = dataset["test"][0].frames[:PRIME]
  assert result.frames.shape == (3, PRIME + GENERATE, FRAME_DIM)
  np.testing.assert_array_equal(result.frames[:, :PRIME], np.broadcast_to(prime, (3,) + prime.shape))
  names = sorted(os.listdir(tmp_path))
  for i in range(3):
    assert f"sample_{i:03d}.mid" in names and f"sample_{i:03d}.json" in names
    back = midi_to_frames(str(tmp_path / f"sample_{i:03d}.mid"))
    np.testing.assert_array_equal(back[:PRIME], prime)
    record = json.load(open(tmp_path / f"sample_{i:03d}.json"))
    assert record["sample_index"] == i and record["midi"] == f"sample_{i:03d}.mid"
    assert record["workdir"] == os.path.abspath(workdir) and record["checkpoint_step"] == 2
    assert record["prime"] == {"kind": "dataset", "split": "test", "piece_index": 0,
                               "piece_name": "test/0", "frames": PRIME}
    for key, value in dict(num_frames=GENERATE, num_samples=3, temperature=0.8, top_p=0.9,
                           seed=3, duration_temperature=1.0, max_polyphony=0, tempo_bpm=120.0,
                           velocity=80, steps_per_quarter=12, duration_mode="ioi").items():
      assert record[key] == value, key
    assert record["model"]["model"] == "lstm" and record["frames_per_s"] > 0
  assert len(result.png_paths) == (3 if plotting.available() else 0)
  for path in result.png_paths:
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_reference_judges_the_samples_against_a_split_and_a_folder(run, tmp_path):
  pytest.importorskip("sklearn")
  workdir, _, dataset = run
  splits = {"train": dataset["train"],  # 2 excerpts of 12 frames in each test piece:
            "test": [Piece(f"test/{i}", toy_frames(300 + i, 30)) for i in range(4)]}
  result = _sample(workdir, tmp_path / "split", num_samples=5, dataset=splits,
                   reference="test")
  written = json.load(open(tmp_path / "split" / "judge.json"))
  assert written["reference"] == "the test split" == result.judge["reference"]
  assert written["samples"] == f"5 continuations of test/0 ({PRIME} frames), temperature 1"
  generated, floor = written["generated"], written["floor"]
  assert (generated["excerpts_a"], generated["excerpts_b"]) == (5, 8)  # after the prime
  assert (floor["excerpts_a"], floor["excerpts_b"]) == (18, 8)  # train 40..45 frames
  for r in (generated, floor):
    assert 0.0 <= r["balanced_accuracy"] <= 1.0 and r["length"] == GENERATE
  assert written["above_floor"] == pytest.approx(
      generated["balanced_accuracy"] - floor["balanced_accuracy"])
  real = tmp_path / "real"
  real.mkdir()
  for piece in splits["test"]:
    frames_to_midi(piece.frames).save(str(real / f"{piece.name[5:]}.mid"))
  folder = _sample(workdir, tmp_path / "folder", num_samples=5, dataset=splits,
                   reference=str(real)).judge
  assert folder["reference"] == str(real) and "floor" not in folder
  assert folder["generated"]["excerpts_b"] == 8


def test_same_seed_same_midi_different_seed_different_midi(run, tmp_path):
  workdir, prime_midi, _ = run
  outs = {name: tmp_path / name for name in ("a", "b", "c")}
  for name, seed in (("a", 7), ("b", 7), ("c", 8)):
    _sample(workdir, outs[name], seed=seed, prime_midi=prime_midi)
  read = lambda name, i: open(outs[name] / f"sample_{i:03d}.mid", "rb").read()
  for i in range(2):
    assert read("a", i) == read("b", i)
    assert read("a", i) != read("c", i)
  assert read("a", 0) != read("a", 1)  # the samples of one batch differ too
  # The MIDI prime is encoded with the run's settings and starts every sample.
  prime = midi_to_frames(prime_midi)[:PRIME]
  np.testing.assert_array_equal(midi_to_frames(str(outs["a"] / "sample_001.mid"))[:PRIME], prime)
  record = json.load(open(outs["a"] / "sample_000.json"))
  assert record["prime"] == {"kind": "midi", "path": os.path.abspath(prime_midi),
                             "frames": PRIME}
  assert record["png"] is None


def _transformer_workdir(workdir, tmp_path):
  """A copy of the lstm run whose config says transformer (fails before loading)."""
  copy = str(tmp_path / "transformer")
  shutil.copytree(workdir, copy)
  path = os.path.join(copy, "config.json")
  config = json.load(open(path))
  config["model"]["model"] = "transformer"
  json.dump(config, open(path, "w"))
  return copy


@pytest.mark.parametrize("case, error, message", [
    ("no workdir", FileNotFoundError, "does not exist"),
    ("no config", FileNotFoundError, "config.json"),
    ("no checkpoint", FileNotFoundError, "no checkpoint"),
    ("missing step", FileNotFoundError, "--step=5"),
    ("unreadable prime", MidiError, "--prime_midi"),
    ("missing prime", FileNotFoundError, "--prime_midi"),
    ("short prime midi", ValueError, "fewer than --prime_frames=21"),
    ("short held-out piece", ValueError, "has 17 frames, fewer than --prime_frames=18"),
    ("piece out of range", ValueError, "--prime_piece=2 is out of range"),
    ("both primes", ValueError, "either --prime_midi or"),
    ("prime over context", ValueError, "exceeds the transformer's context of 8"),
    ("prime 0", ValueError, "--prime_frames must be positive"),
    ("temperature 0", ValueError, "--temperature must be positive"),
    ("temperature nan", ValueError, "--temperature must be a finite number"),
    ("top_p 0", ValueError, "--top_p must be in"),
    ("top_p 1.5", ValueError, "--top_p must be in"),
    ("out_dir under a file", ValueError, "cannot write to --out_dir"),
    ("too few samples to judge", ValueError, "at least 5 excerpts of 12 frames"),
    ("no reference folder", FileNotFoundError, "--reference="),
])
def test_bad_input_fails_before_loading_the_model(run, tmp_path, monkeypatch, case, error,
                                                  message):
  workdir, prime_midi, dataset = run

  def must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")

  monkeypatch.setattr(workdir_lib, "load_run", must_not_load)
  out = tmp_path / "out"
  kwargs = {"prime_midi": prime_midi}
  if case == "no workdir":
    workdir = str(tmp_path / "missing")
  elif case == "no config":
    workdir = str(tmp_path)
  elif case == "no checkpoint":
    shutil.copy(os.path.join(run[0], "config.json"), tmp_path / "config.json")
    workdir = str(tmp_path)
  elif case == "missing step":
    kwargs["step"] = 5
  elif case == "unreadable prime":
    (tmp_path / "bad.mid").write_bytes(b"this is not a MIDI file")
    kwargs["prime_midi"] = str(tmp_path / "bad.mid")
  elif case == "missing prime":
    kwargs["prime_midi"] = str(tmp_path / "missing.mid")
  elif case == "short prime midi":
    kwargs["prime_frames"] = 21  # the file has 20 frames
  elif case == "short held-out piece":
    kwargs = dict(prime_piece=1, prime_frames=18, dataset=dataset)  # test/1 has 17 frames
  elif case == "piece out of range":
    kwargs = dict(prime_piece=2, dataset=dataset)
  elif case == "both primes":
    kwargs["prime_split"] = "valid"
  elif case == "prime over context":
    workdir = _transformer_workdir(workdir, tmp_path)
    kwargs["prime_frames"] = 9
  elif case == "prime 0":
    kwargs["prime_frames"] = 0
  elif case.startswith("temperature"):
    kwargs["temperature"] = float(case.split()[1])
  elif case.startswith("top_p"):
    kwargs["top_p"] = float(case.split()[1])
  elif case == "out_dir under a file":
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
  elif case == "too few samples to judge":
    kwargs.update(reference="test", num_samples=4)  # 4 samples of 12 frames: 4 excerpts
  elif case == "no reference folder":
    kwargs.update(reference=str(tmp_path / "missing"), num_samples=5)
  with pytest.raises(error, match=message):
    _sample(workdir, out, **kwargs)


def test_rnn_and_lstm_take_any_prime_length_windowed_models_at_most_seq_len():
  base = toy_config().model
  for model in ("rnn", "lstm"):
    sample_lib.check_prime_fits(dataclasses.replace(base, model=model), 1000)
  for model in ("transformer", "bilstm"):
    sample_lib.check_prime_fits(dataclasses.replace(base, model=model), base.seq_len)
    with pytest.raises(ValueError, match=f"--prime_frames <= {base.seq_len}"):
      sample_lib.check_prime_fits(dataclasses.replace(base, model=model), base.seq_len + 1)


def test_cli_error_is_one_line_without_traceback(run, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  proc = subprocess.run(
      [sys.executable, "-m", "musicgen_jax.sample", f"--workdir={run[0]}",
       f"--out_dir={tmp_path}", f"--prime_midi={run[1]}", "--temperature=0"],
      capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines == ["error: --temperature must be positive, got 0.0"], lines


@functools.partial(jax.jit, static_argnums=(0, 3))
def _expected_samples(cfg, params, frames, settings, rng):
  """What the sampler must draw after the prime, from the full model's predictions.

  frames: float32[batch, PRIME + GENERATE, 107] as sampled. Returns
  float32[batch, GENERATE, 107]: frame PRIME + i drawn with fold_in(rng, i) from the
  prediction of `apply_model` on the frames before it.
  """
  batch, total = frames.shape[:2]
  if is_causal(cfg):
    # Output t of the whole sequence predicts frame t + 1.
    pred = apply_model(cfg, params, frames[:, :-1])
    pred = jax.tree.map(lambda a: a[:, PRIME - 1:], pred)  # [batch, GENERATE, ...]
  else:
    # The bilstm predicts from the last seq_len frames before the target (fewer at first).
    windows, lengths = [], []
    for t in range(PRIME, total):
      window = frames[:, max(0, t - cfg.seq_len):t]
      lengths.append(window.shape[1])
      windows.append(jnp.pad(window, ((0, 0), (0, cfg.seq_len - window.shape[1]), (0, 0))))
    stacked = jnp.concatenate(windows)  # [GENERATE * batch, seq_len, 107], time-major
    pred = apply_model(cfg, params, stacked, lengths=jnp.repeat(jnp.asarray(lengths), batch))
    pred = jax.tree.map(
        lambda a: jnp.swapaxes(a[:, 0].reshape(GENERATE, batch, -1), 0, 1), pred)
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(GENERATE, dtype=jnp.uint32))
  draw = lambda p, key: sampling.sample_frame(p, key, settings)
  return jax.vmap(draw, in_axes=(1, 0), out_axes=1)(pred, keys)


# The incremental decoding that the sampler drives equals the full model, for every
# model. (decode_step against apply_model is tested in test_models.py; this checks the
# sampler path: prime consumption, the step function and the per-frame keys.)
@pytest.mark.parametrize("model", ["rnn", "lstm", "bilstm", "transformer"])
def test_each_sampled_frame_follows_the_full_models_prediction(model):
  cfg = toy_config(model=model).model  # seq_len 8: prime + generated frames exceed it
  params = init_params(cfg, jax.random.key(1))
  settings = sampling.SampleSettings(num_frames=GENERATE, temperature=0.5)
  frames, _ = sample_lib.sample_frames(cfg, params, toy_frames(7, PRIME), settings,
                                       num_samples=2, seed=11)
  expected = _expected_samples(cfg, params, jnp.asarray(frames), settings, jax.random.key(11))
  # Float rounding between the two paths could flip a draw sitting on its threshold;
  # allow a handful of such flips in 2 x 12 x 107 draws, no more.
  mismatches = int(np.sum(np.asarray(expected) != frames[:, PRIME:]))
  assert mismatches <= 3, mismatches


def test_choose_sampling_scores_each_setting_and_prefers_temperature_one_on_ties(run):
  pytest.importorskip("sklearn")
  from musicgen_jax import choose_sampling  # pylint: disable=g-import-not-at-top
  workdir, _, dataset = run
  splits = {"train": dataset["train"],
            "valid": [Piece(f"valid/{i}", toy_frames(400 + i, 30)) for i in range(4)]}
  result = choose_sampling.choose(workdir_lib.load_run(workdir), splits, "valid",
                                  temperatures=[0.5, 1.0], top_ps=[1.0], num_frames=GENERATE,
                                  prime_frames=PRIME, samples_per_prime=2)
  assert [(r["temperature"], r["top_p"]) for r in result["curve"]] == [(0.5, 1.0), (1.0, 1.0)]
  assert all(r["excerpts"] == 8 for r in result["curve"])  # 4 primes x 2 samples
  best = min(r["balanced_accuracy"] for r in result["curve"])
  assert result["balanced_accuracy"] <= best + choose_sampling.TIE
  assert 0.0 <= result["floor"] <= 1.0 and result["length"] == GENERATE
  curve = [dict(temperature=t, top_p=p, balanced_accuracy=a)
           for t, p, a in ((0.8, 1.0, 0.70), (1.0, 0.9, 0.703), (1.2, 1.0, 0.60))]
  assert choose_sampling.best_of(curve)["temperature"] == 1.2
  curve[2]["balanced_accuracy"] = 0.75
  assert (choose_sampling.best_of(curve)["temperature"], choose_sampling.best_of(curve)["top_p"]
          ) == (1.0, 0.9)  # 0.703 ties 0.70 and lies nearer T=1, top_p=1
  with pytest.raises(ValueError, match="at least 5 excerpts"):
    choose_sampling.choose(workdir_lib.load_run(workdir), splits, "valid", num_frames=GENERATE,
                           prime_frames=PRIME, samples_per_prime=1)

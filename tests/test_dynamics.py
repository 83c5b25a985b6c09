"""Dynamics: velocity in the frame, predicted, sampled, written and described."""

import jax
import jax.numpy as jnp
import mido
import numpy as np

from musicgen_jax.encoding import FrameLayout
import pytest

from musicgen_jax import encode_midi, frames_to_midi, losses, midi_to_frames, music_stats
from musicgen_jax import generate, sampling
from musicgen_jax.config import RunConfig
from musicgen_jax.data import DataConfig, load_dataset
from musicgen_jax.encoding import NUM_NOTES, VELOCITY_INDEX
from musicgen_jax.models import (CategoricalVelocity, ModelConfig, apply_model, init_params)
from musicgen_jax.models.distributions import velocity_bin, velocity_of_bin
from toy import toy_config, toy_frames

BINS = 8


def dynamic_midi(velocities):
  """One note per beat at the given velocities; a two-note chord at the end (64 and 100)."""
  midi = mido.MidiFile(ticks_per_beat=480)
  track = mido.MidiTrack()
  midi.tracks.append(track)
  for i, v in enumerate(velocities):
    track.append(mido.Message("note_on", note=60 + i % 12, velocity=int(v), time=0))
    track.append(mido.Message("note_off", note=60 + i % 12, velocity=0, time=480))
  track.append(mido.Message("note_on", note=48, velocity=64, time=0))
  track.append(mido.Message("note_on", note=52, velocity=100, time=0))
  track.append(mido.Message("note_off", note=48, velocity=0, time=480))
  track.append(mido.Message("note_off", note=52, velocity=0, time=0))
  return midi


def test_encoding_reads_each_onsets_mean_velocity_and_decoding_plays_it():
  midi = dynamic_midi([20, 40, 90, 127])
  frames, stats = encode_midi(midi, with_velocity=True)
  assert frames.shape == (5, 108)
  np.testing.assert_array_equal(frames[:, VELOCITY_INDEX], [20, 40, 90, 127, 82])  # chord: mean
  assert (stats.velocity_min, stats.velocity_max) == (20, 127)
  assert not stats.constant_velocity
  back = frames_to_midi(frames)
  played = [m.velocity for m in back.tracks[0] if m.type == "note_on" and m.velocity > 0]
  assert played == [20, 40, 90, 127, 82, 82]
  again = midi_to_frames(back, with_velocity=True)
  np.testing.assert_array_equal(again, frames)  # the round trip keeps every velocity
  assert midi_to_frames(midi).shape == (5, 107)  # off by default: the study's frame


def test_a_file_at_one_velocity_says_so():
  frames, stats = encode_midi(frames_to_midi(toy_frames(0, 12), velocity=70),
                              with_velocity=True)
  assert stats.constant_velocity
  notes = frames[:, :NUM_NOTES].sum(axis=1) > 0
  np.testing.assert_array_equal(frames[notes, VELOCITY_INDEX], 70)
  np.testing.assert_array_equal(frames[~notes, VELOCITY_INDEX], 0)


def test_velocity_bins_round_trip_to_their_bin():
  v = np.arange(1, 128)
  k = np.asarray(velocity_bin(v, BINS, xp=np))
  assert k.min() == 0 and k.max() == BINS - 1 and np.all(np.diff(k) >= 0)
  centres = np.asarray(velocity_of_bin(k, BINS, xp=np))
  np.testing.assert_array_equal(np.asarray(velocity_bin(centres, BINS, xp=np)), k)


def test_velocity_head_nll_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, BINS)).astype(np.float32)
  velocity = np.array([1.0, 64.0, 127.0, 0.0, 100.0], np.float32)
  got = np.asarray(CategoricalVelocity(jnp.asarray(logits)).nll(jnp.asarray(velocity)))
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  classes = np.minimum(((velocity - 1) * BINS / 127).astype(int), BINS - 1)
  expected = np.where(velocity > 0, -log_p[np.arange(5), np.maximum(classes, 0)], 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def _dynamic_config():
  return ModelConfig(model="lstm", hidden_size=8, num_layers=1, max_duration_steps=24,
                     velocity_bins=BINS)


def _dynamic_frames(seed, length):
  frames = toy_frames(seed, length)
  velocity = np.where(frames[:, :NUM_NOTES].sum(1) > 0, 30 + (np.arange(length) % 5) * 20, 0)
  return np.concatenate([frames, velocity[:, None].astype(np.float32)], axis=1)


def test_nll_velocity_is_reported_apart_and_nll_stays_comparable():
  cfg = _dynamic_config()
  params = init_params(cfg, jax.random.key(0))
  frames = jnp.asarray(_dynamic_frames(1, 10)[None])
  pred = apply_model(cfg, params, frames[:, :-1])
  terms = losses.frame_terms(pred, frames[:, 1:])
  np.testing.assert_allclose(terms["nll"], terms["nll_notes"] + terms["nll_duration"],
                             rtol=1e-6)
  np.testing.assert_allclose(terms["nll_total"], terms["nll"] + terms["nll_velocity"],
                             rtol=1e-6)
  assert float(terms["nll_velocity"].sum()) > 0
  # A velocity head beside the others, and none in a model without dynamics.
  assert params["heads"]["velocity"]["kernel"].shape == (8, BINS)
  plain = ModelConfig(model="lstm", hidden_size=8, num_layers=1, max_duration_steps=24)
  assert "velocity" not in init_params(plain, jax.random.key(0))["heads"]


def test_velocity_temperature_near_zero_is_the_argmax():
  cfg = _dynamic_config()
  params = init_params(cfg, jax.random.key(0))
  settings = sampling.SampleSettings(num_frames=6, velocity_temperature=1e-4, temperature=0.5)
  frames, _ = generate.sample_frames(cfg, params, _dynamic_frames(2, 3), settings, 3, seed=0)
  assert frames.shape == (3, 9, 108)
  sounding = frames[:, 3:, :NUM_NOTES].sum(-1) > 0
  np.testing.assert_array_equal(frames[:, 3:, VELOCITY_INDEX][~sounding], 0)
  # Each sampled velocity is the centre of the most probable class of its prediction.
  pred = apply_model(cfg, params, jnp.asarray(frames[:, :-1]))
  best = np.argmax(np.asarray(pred.velocity.logits), axis=-1)[:, 2:]
  expected = np.asarray(velocity_of_bin(best, BINS, xp=np))
  np.testing.assert_array_equal(frames[:, 3:, VELOCITY_INDEX][sounding], expected[sounding])


def test_velocity_statistics_compare_dynamics():
  loud = [_dynamic_frames(i, 64) for i in range(4)]
  quiet = [f.copy() for f in loud]
  for f in quiet:
    f[:, VELOCITY_INDEX] = np.where(f[:, VELOCITY_INDEX] > 0, 20, 0)
  features = music_stats.piece_features(loud[0])
  assert features["mean_velocity"] > 50 and features["velocity_spread"] > 10
  assert music_stats.piece_features(quiet[0])["velocity_spread"] == 0
  same = music_stats.compare_sets(loud[:2], loud[2:])["features"]["mean_velocity"]
  far = music_stats.compare_sets(quiet[:2], loud[2:])["features"]["mean_velocity"]
  assert same["overlap"] > far["overlap"]
  assert "mean_velocity" not in music_stats.piece_features(toy_frames(0, 20))


def test_velocity_bins_flow_from_the_data_to_the_model(tmp_path):
  folder = tmp_path / "midi"
  folder.mkdir()
  for i in range(5):
    dynamic_midi([30 + 10 * i, 60, 90]).save(str(folder / f"p{i}.mid"))
  data = DataConfig(dataset="midi_dir", data_dir=str(folder), velocity_bins=BINS,
                    cache_dir=str(tmp_path / "c"), num_workers=1, valid_fraction=0,
                    test_fraction=0)
  dataset = load_dataset(data)
  assert {p.frames.shape[1] for p in dataset["train"]} == {
      FrameLayout(velocity=True, lengths=True, metre=True).width}
  config = RunConfig.create(ModelConfig(), data, toy_config().train)
  assert config.model.velocity_bins == BINS
  assert RunConfig.from_json(config.to_json()) == config
  with pytest.raises(ValueError, match="velocity_bins"):
    DataConfig(dataset="json", data_path="x.json", velocity_bins=4)

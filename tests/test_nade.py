"""The within-frame autoregressive note head (NADE): exact likelihood, exact sampling."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import generate, losses, sampling
from musicgen_jax.encoding import DURATION_INDEX, NUM_NOTES
from musicgen_jax.models import (ModelConfig, NadeNotes, apply_model, decode_step, init_carry,
                                 init_params)
from toy import toy_frames

HIDDEN = 12


def random_nade(seed, batch, scale=1.0, bias=-1.0):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32) * scale)
  return NadeNotes(visible_bias=normal(batch, NUM_NOTES) + bias,
                   hidden_bias=normal(batch, HIDDEN), w_in=normal(NUM_NOTES, HIDDEN),
                   w_out=normal(HIDDEN, NUM_NOTES))


def loop_log_prob(nade: NadeNotes, notes: np.ndarray) -> np.ndarray:
  """log p(notes) as the product of 106 conditionals, one pitch at a time (plain numpy)."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), nade)
  out = np.zeros(notes.shape[0])
  for b in range(notes.shape[0]):
    hidden_in = params.hidden_bias[b].copy()
    for i in range(NUM_NOTES):
      h = 1.0 / (1.0 + np.exp(-hidden_in))
      p = 1.0 / (1.0 + np.exp(-(params.visible_bias[b, i] + h @ params.w_out[:, i])))
      out[b] += np.log(p) if notes[b, i] else np.log1p(-p)
      hidden_in += notes[b, i] * params.w_in[i]
  return out


def test_log_likelihood_equals_the_product_of_106_conditionals():
  nade = random_nade(0, batch=4)
  rng = np.random.default_rng(1)
  notes = (rng.random((4, NUM_NOTES)) < 0.1).astype(np.float32)
  notes[0] = 0.0
  notes[1, [0, 105]] = 1.0  # the first and the last pitch
  logits = nade.conditional_logits(jnp.asarray(notes))
  nll = -(notes * jax.nn.log_sigmoid(logits) + (1 - notes) * jax.nn.log_sigmoid(-logits))
  np.testing.assert_allclose(-np.asarray(nll.sum(-1)), loop_log_prob(nade, notes), rtol=1e-5)


def test_the_per_segment_pass_equals_the_per_pitch_pass():
  nade = random_nade(7, batch=6)
  rng = np.random.default_rng(8)
  notes = (rng.random((6, NUM_NOTES)) < 0.08).astype(np.float32)
  notes[0] = 0.0
  notes[1, -1] = notes[1, 0] = 1.0
  assert notes.sum(-1).max() < 16
  no_classes = jnp.zeros(notes.shape, jnp.int32)  # a NADE without note lengths
  np.testing.assert_allclose(nade._by_segments(jnp.asarray(notes), no_classes)[0],
                             nade._by_pitch(jnp.asarray(notes), no_classes)[0],
                             rtol=1e-5, atol=1e-5)
  dense = notes.copy()
  dense[2, ::3] = 1.0  # 36 notes: more than the segments, so the per-pitch pass is taken
  np.testing.assert_allclose(nade.conditional_logits(jnp.asarray(dense)),
                             nade._by_pitch(jnp.asarray(dense), no_classes)[0], rtol=1e-6)
  logits = nade.conditional_logits(jnp.asarray(dense))
  nll = -(dense * jax.nn.log_sigmoid(logits) + (1 - dense) * jax.nn.log_sigmoid(-logits))
  np.testing.assert_allclose(-np.asarray(nll.sum(-1)), loop_log_prob(nade, dense), rtol=1e-5)


def test_loss_of_a_nade_model_is_minus_its_log_likelihood():
  cfg = ModelConfig(model="lstm", hidden_size=8, num_layers=1, note_head="nade",
                    nade_hidden=HIDDEN, max_duration_steps=24)
  params = init_params(cfg, jax.random.key(0))
  frames = jnp.asarray(toy_frames(3, 12)[None])
  pred = apply_model(cfg, params, frames[:, :-1])
  terms = losses.frame_terms(pred, frames[:, 1:])
  notes = np.asarray(frames[0, 1:, :NUM_NOTES])
  for t in range(notes.shape[0]):
    one = jax.tree.map(lambda a: a[0, t:t + 1] if a.ndim == 3 else a, pred.notes)
    assert float(terms["nll_notes"][0, t]) == pytest.approx(
        -loop_log_prob(one, notes[t:t + 1])[0], rel=1e-4)


@functools.partial(jax.jit, static_argnames=("max_polyphony",))
def _sample(nade, key, temperature, max_polyphony=0, allowed=None):
  return nade.sample(key, temperature=temperature, max_polyphony=max_polyphony,
                     allowed=allowed)


def greedy_by_full_passes(nade: NadeNotes) -> np.ndarray:
  """Pitch by pitch: each decision from the full conditional pass given the choices so far."""
  batch = nade.visible_bias.shape[0]
  notes = np.zeros((batch, NUM_NOTES), np.float32)
  for i in range(NUM_NOTES):
    logits = np.asarray(nade.conditional_logits(jnp.asarray(notes)))
    notes[:, i] = logits[:, i] > 0
  return notes


def test_greedy_sampling_equals_pitch_by_pitch_decoding_with_full_passes():
  nade = random_nade(2, batch=8, scale=1.5, bias=0.0)
  expected = greedy_by_full_passes(nade)
  assert expected.sum() > 8  # chords: the conditionals really interact
  got = np.asarray(_sample(nade, jax.random.key(0), 1e-4))
  np.testing.assert_array_equal(got, expected)


def test_sampled_frames_follow_the_conditionals():
  """On a NADE over a few live pitches, frame frequencies match the exact probabilities."""
  live = [30, 31, 35]
  nade = random_nade(6, batch=1, scale=1.5)
  bias = np.full((1, NUM_NOTES), -30.0, np.float32)
  bias[0, live] = [0.3, -0.5, 0.8]
  nade = nade.replace(visible_bias=jnp.asarray(bias))
  draws = 20000
  batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (draws,) + a.shape[1:])
                       if a.shape[0] == 1 else a, nade)
  samples = np.asarray(_sample(batch, jax.random.key(5), 1.0))
  assert samples[:, [i for i in range(NUM_NOTES) if i not in live]].sum() == 0
  joint = np.zeros((2, 2, 2))
  for pattern in itertools.product([0, 1], repeat=3):
    frame = np.zeros((1, NUM_NOTES), np.float32)
    frame[0, live] = pattern
    p = joint[pattern] = float(np.exp(loop_log_prob(nade, frame)[0]))
    freq = float(np.mean(np.all(samples[:, live] == pattern, axis=1)))
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / draws) + 1e-3, (pattern, freq, p)
  assert joint.sum() == pytest.approx(1.0, abs=1e-6)
  # Not independent pitches: the joint is not the product of its marginals.
  marginals = [joint.sum(axis=tuple(j for j in range(3) if j != i)) for i in range(3)]
  product = np.einsum("a,b,c->abc", *marginals)
  assert np.abs(joint - product).max() > 0.02


def test_max_polyphony_and_allowed_pitches():
  nade = random_nade(4, batch=64, scale=1.0, bias=2.0)  # dense frames
  free = np.asarray(_sample(nade, jax.random.key(1), 1.0))
  limited = np.asarray(_sample(nade, jax.random.key(1), 1.0, max_polyphony=3))
  assert free.sum(-1).min() > 3
  np.testing.assert_array_equal(limited.sum(-1), 3)
  # The same draws: the first three notes (lowest first) are kept.
  for b in range(64):
    np.testing.assert_array_equal(np.flatnonzero(limited[b]), np.flatnonzero(free[b])[:3])
  allowed = np.zeros(NUM_NOTES, bool)
  allowed[40:60] = True
  masked = np.asarray(_sample(nade, jax.random.key(1), 1.0, allowed=jnp.asarray(allowed)))
  assert masked[:, ~allowed].sum() == 0 and masked[:, allowed].sum() > 0


@pytest.mark.parametrize("model", ["rnn", "lstm", "bilstm", "transformer"])
def test_every_backbone_samples_with_the_nade_head(model):
  cfg = ModelConfig(model=model, hidden_size=8, num_layers=2, num_heads=2, seq_len=6,
                    note_head="nade", nade_hidden=HIDDEN, max_duration_steps=24)
  params = init_params(cfg, jax.random.key(0))
  settings = sampling.SampleSettings(num_frames=5, temperature=0.8, max_polyphony=4)
  frames, _ = generate.sample_frames(cfg, params, toy_frames(1, 3), settings, 2, seed=0)
  assert frames.shape == (2, 8, 107)
  assert set(np.unique(frames[:, 3:, :NUM_NOTES])) <= {0.0, 1.0}
  assert frames[:, 3:, :NUM_NOTES].sum(-1).max() <= 4
  assert np.all(frames[:, 3:, DURATION_INDEX] > 0)
  # Each decoding step's distribution is the full model's at that position.
  if model != "bilstm":
    pred, _ = decode_step(cfg, params, jnp.asarray(frames[:, 0]), init_carry(cfg, 2))
    full = apply_model(cfg, params, jnp.asarray(frames[:, :1]))
    np.testing.assert_allclose(pred.notes.hidden_bias, full.notes.hidden_bias[:, 0],
                               atol=1e-5)

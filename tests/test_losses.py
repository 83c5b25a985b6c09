"""Tests for musicgen_jax.losses: hand-computable cases, masking, both duration heads."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import losses
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, NUM_NOTES, duration_classes
from musicgen_jax.models import (CategoricalDuration, FrameDistribution, IndependentNotes,
                                 LogNormalDuration)

# Compiled once per shape; the tests share shapes (3 frames) to reuse them.
frame_terms = jax.jit(losses.frame_terms)
loss_and_metrics = jax.jit(losses.loss_and_metrics)
duration_class = jax.jit(lambda d: duration_classes(d, 12, 96, xp=jnp))


def _categorical(note_logits, logits):
  return FrameDistribution(IndependentNotes(jnp.asarray(note_logits, jnp.float32)),
                           CategoricalDuration(jnp.asarray(logits, jnp.float32), 12))


def _regression(note_logits, mean_log_std):
  return FrameDistribution(IndependentNotes(jnp.asarray(note_logits, jnp.float32)),
                           LogNormalDuration(jnp.asarray(mean_log_std, jnp.float32), 12, 96))


def _frames(notes_on, durations):
  """float32[len(durations), 107] with the listed note indices on in every frame."""
  frames = np.zeros((len(durations), FRAME_DIM), np.float32)
  frames[:, notes_on] = 1.0
  frames[:, DURATION_INDEX] = durations
  return jnp.asarray(frames)


@pytest.mark.parametrize("duration, expected", [
    (1.0 / 12, 0),  # the shortest class
    (0.5, 5),  # an eighth: 6 steps
    (1.0, 11),  # a quarter: 12 steps
    (8.0, 95),  # the longest class
    (100.0, 95),  # longer durations clip to the last class
    (0.0, 0),  # padding clips to the first class
    (1.0 / 3 + 0.001, 3),  # a triplet eighth, off the grid by float error
])
def test_duration_class(duration, expected):
  assert int(duration_class(jnp.float32(duration))) == expected


def test_zero_logits_give_log2_per_note_and_uniform_duration():
  targets = _frames([0, 39, 105], [1.0, 0.25, 20.0])
  pred = _categorical(jnp.zeros((3, NUM_NOTES)), jnp.zeros((3, 96)))
  terms = frame_terms(pred, targets)
  np.testing.assert_allclose(terms["nll_notes"], [106 * math.log(2)] * 3, rtol=1e-6)
  np.testing.assert_allclose(terms["nll_notes_88"], [88 * math.log(2)] * 3, rtol=1e-6)
  np.testing.assert_allclose(terms["nll_duration"], [math.log(96)] * 3, rtol=1e-6)
  np.testing.assert_allclose(terms["nll"], [106 * math.log(2) + math.log(96)] * 3, rtol=1e-6)
  # logit 0 is probability 0.5, not above the threshold: nothing predicted.
  np.testing.assert_array_equal(terms["tp"], [0, 0, 0])
  np.testing.assert_array_equal(terms["fp"], [0, 0, 0])
  np.testing.assert_array_equal(terms["fn"], [3, 3, 3])


def test_notes_match_hand_computed_bce_and_stay_finite_at_extreme_logits():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, NUM_NOTES)).astype(np.float32) * 3
  logits[0, :5] = [200.0, -200.0, 200.0, -200.0, 0.0]
  notes = (rng.random((3, NUM_NOTES)) < 0.2).astype(np.float32)
  notes[0, :4] = [1.0, 1.0, 0.0, 0.0]
  targets = np.concatenate([notes, np.ones((3, 1), np.float32)], axis=-1)
  pred = _categorical(jnp.asarray(logits), jnp.zeros((3, 96)))
  terms = frame_terms(pred, jnp.asarray(targets))
  # -[y log s(x) + (1 - y) log(1 - s(x))] = softplus(x) - y x, evaluated stably.
  expected = (np.logaddexp(0.0, logits) - notes * logits).sum(axis=-1)
  assert np.all(np.isfinite(terms["nll_notes"]))
  np.testing.assert_allclose(terms["nll_notes"], expected, rtol=1e-5)


def test_categorical_duration_is_minus_log_softmax_at_target_class():
  logits = jnp.zeros((3, 96)).at[:, 11].set(5.0).at[2, 95].set(2.0)
  pred = _categorical(jnp.zeros((3, NUM_NOTES)), logits)
  log_z = math.log(95 + math.exp(5.0))
  log_z2 = math.log(94 + math.exp(5.0) + math.exp(2.0))
  # A quarter (class 11), an eighth (class 5), and a long rest (the last class).
  terms = frame_terms(pred, _frames([], [1.0, 0.5, 30.0]))
  np.testing.assert_allclose(terms["nll_duration"], [log_z - 5.0, log_z, log_z2 - 2.0],
                             rtol=1e-5)


def test_regression_duration_is_gaussian_nll_of_log_duration():
  durations = [1.0, 2.0, 0.5]
  mean = jnp.log(jnp.asarray([1.0, 2.0, 1.0]))  # exact, exact, off by log 2
  log_std = jnp.asarray([0.0, math.log(0.5), 0.0])
  pred = _regression(jnp.zeros((3, NUM_NOTES)), jnp.stack([mean, log_std], axis=-1))
  terms = frame_terms(pred, _frames([], durations))
  half_log_2pi = 0.5 * math.log(2 * math.pi)
  expected = [half_log_2pi, half_log_2pi + math.log(0.5),
              half_log_2pi + 0.5 * math.log(2.0)**2]
  np.testing.assert_allclose(terms["nll_duration"], expected, rtol=1e-5)
  # Padding (duration 0) stays finite: the target is floored at one grid step.
  padded = frame_terms(pred, _frames([], [0.0, 0.0, 0.0]))
  assert np.all(np.isfinite(padded["nll_duration"]))


def test_tp_fp_fn_counts():
  logits = np.full((3, NUM_NOTES), -3.0, np.float32)
  logits[0, [0, 1, 2, 50]] = 3.0  # predicts 0, 1, 2, 50
  logits[1, [60, 61, 62]] = 0.5  # predicts exactly the targets
  targets = _frames([1, 2, 60, 61, 62], [1.0, 1.0, 1.0])  # row 2 predicts nothing
  pred = _categorical(jnp.asarray(logits), jnp.zeros((3, 96)))
  terms = frame_terms(pred, targets)
  np.testing.assert_array_equal(terms["tp"], [2, 3, 0])
  np.testing.assert_array_equal(terms["fp"], [2, 0, 0])
  np.testing.assert_array_equal(terms["fn"], [3, 2, 5])


def test_mask_weights_frames_and_metrics_are_sums():
  targets = _frames([0], [1.0, 1.0, 1.0])
  # Frame 0 is predicted perfectly for notes; frames 1 and 2 are not.
  logits = jnp.full((3, NUM_NOTES), -20.0).at[0, 0].set(20.0)
  logits = logits.at[1].set(0.0).at[2].set(0.0)
  pred = _categorical(logits, jnp.zeros((3, 96)))
  terms = frame_terms(pred, targets)
  mask = jnp.asarray([1.0, 0.5, 0.0])
  loss, metrics = loss_and_metrics(pred, targets, mask)
  expected_sum = terms["nll"][0] + 0.5 * terms["nll"][1]
  np.testing.assert_allclose(metrics["nll"], expected_sum, rtol=1e-6)
  np.testing.assert_allclose(metrics["count"], 1.5)
  np.testing.assert_allclose(loss, expected_sum / 1.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["nll_notes"] + metrics["nll_duration"], metrics["nll"],
                             rtol=1e-6)
  np.testing.assert_allclose(metrics["tp"], 1.0)  # frame 0 only; frame 2 is masked
  np.testing.assert_allclose(metrics["fn"], 0.5)  # half of frame 1's missed note
  assert set(metrics) == {"nll", "nll_notes", "nll_notes_88", "nll_duration", "nll_velocity",
                          "nll_length", "nll_total", "tp", "fp", "fn", "count"}
  np.testing.assert_allclose(metrics["nll_length"], 0.0)  # no note lengths in these frames
  np.testing.assert_allclose(metrics["nll_velocity"], 0.0)  # no dynamics in these frames
  np.testing.assert_allclose(metrics["nll_total"], metrics["nll"], rtol=1e-6)


def test_masked_frames_cannot_poison_the_loss():
  targets = _frames([0], [1.0, 1.0, 1.0])
  logits = jnp.zeros((3, NUM_NOTES)).at[1, 0].set(jnp.nan).at[2].set(jnp.inf)
  pred = _categorical(logits, jnp.zeros((3, 96)))
  loss, metrics = loss_and_metrics(pred, targets, jnp.asarray([1.0, 0.0, 0.0]))
  np.testing.assert_allclose(loss, 106 * math.log(2) + math.log(96), rtol=1e-6)
  assert all(np.isfinite(v) for v in metrics.values())


def test_loss_has_finite_gradients_over_batch_and_time():
  rng = np.random.default_rng(1)
  targets = np.concatenate([(rng.random((2, 5, NUM_NOTES)) < 0.1).astype(np.float32),
                            np.full((2, 5, 1), 0.75, np.float32)], axis=-1)
  targets[1, 3:] = 0.0  # padding: duration 0
  mask = np.ones((2, 5), np.float32)
  mask[1, 3:] = 0.0

  def loss_fn(logits, duration):
    pred = _categorical(logits, duration)
    return losses.loss_and_metrics(pred, targets, mask)[0]

  grad_fn = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))
  grads = grad_fn(jnp.zeros((2, 5, NUM_NOTES)), jnp.zeros((2, 5, 2)))
  assert all(np.all(np.isfinite(g)) for g in grads)
  assert float(jnp.abs(grads[1][..., 0]).sum()) > 0  # the mean is being fitted
  np.testing.assert_array_equal(grads[0][1, 3:], 0.0)  # masked frames get no gradient


def test_the_note_cross_entropy_and_its_written_gradient():
  import optax
  from musicgen_jax.losses import note_cross_entropy
  logits = jnp.asarray(np.random.default_rng(0).normal(0, 4, (3, 106)), jnp.float32)
  notes = jnp.asarray(np.random.default_rng(1).random((3, 106)) < 0.1, jnp.float32)
  weights = jnp.linspace(0.0, 2.0, 106)
  ours = lambda x: jnp.sum(note_cross_entropy(x, notes) * weights)
  theirs = lambda x: jnp.sum(optax.sigmoid_binary_cross_entropy(x, notes) * weights)
  np.testing.assert_allclose(ours(logits), theirs(logits), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(theirs)(logits), rtol=1e-5,
                             atol=1e-6)

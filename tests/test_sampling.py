"""Tests for the model-independent sampler, driven by fake step functions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import sampling
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, NUM_NOTES
from musicgen_jax.models import (CategoricalDuration, FrameDistribution, IndependentNotes,
                                 LogNormalDuration)

# sample_frame, compiled: eager op-by-op dispatch would dominate the test time.
_sample_frame = jax.jit(sampling.sample_frame, static_argnums=2)

BIG = 1e9  # a logit that makes a Bernoulli or categorical draw certain
SPQ = 12
NUM_CLASSES = 8
# Statistical tests share one batch size and base settings, so they share compilations.
STATS_BATCH = 1000
STATS = sampling.SampleSettings()
STATS_SPQ = 4  # the duration grid of the statistical tests' predictions


def _pred(note_logits, duration, spq=SPQ, regression=False, max_steps=96):
  """A FrameDistribution from raw arrays: categorical logits, or regression (mean, log-std)."""
  notes = IndependentNotes(logits=jnp.asarray(note_logits, jnp.float32))
  duration = jnp.asarray(duration, jnp.float32)
  if regression:
    return FrameDistribution(notes, LogNormalDuration(duration, spq, max_steps))
  return FrameDistribution(notes, CategoricalDuration(duration, spq))


def _counting_step(frame, carry):
  """A deterministic fake model whose prediction depends on history and the input.

  carry: count int32[batch] (step_fn calls so far, plus a per-sample offset) and
  total float32[batch] (sum of all fed durations, in grid steps). After the call,
  with c the new count: note j is on iff note j - 1 of `frame` was on (a shift up one
  semitone) XOR j == c % 106; the duration class is (c + total) % NUM_CLASSES.
  """
  count = carry["count"] + 1
  total = carry["total"] + jnp.round(frame[:, DURATION_INDEX] * SPQ)
  shifted = jnp.roll(frame[:, :NUM_NOTES] > 0.5, 1, axis=-1)
  marker = jnp.arange(NUM_NOTES) == (count % NUM_NOTES)[:, None]
  on = shifted ^ marker
  klass = (count + total.astype(jnp.int32)) % NUM_CLASSES
  hot = jnp.arange(NUM_CLASSES) == klass[:, None]
  pred = _pred(jnp.where(on, BIG, -BIG), jnp.where(hot, BIG, -BIG))
  return pred, {"count": count, "total": total}


def _counting_reference(count0, prime, num_frames):
  """What `generate` must return for `_counting_step`, computed with numpy."""
  batch, num_prime, _ = prime.shape
  out = np.zeros((batch, num_prime + num_frames, FRAME_DIM), np.float32)
  out[:, :num_prime] = prime
  for b in range(batch):
    count, total = int(count0[b]), 0
    for t in range(num_prime + num_frames - 1):
      frame = out[b, t]
      count += 1
      total += int(round(frame[DURATION_INDEX] * SPQ))
      if t < num_prime - 1:
        continue  # still priming: predictions are not used
      on = np.roll(frame[:NUM_NOTES] > 0.5, 1)
      on[count % NUM_NOTES] ^= True
      out[b, t + 1, :NUM_NOTES] = on
      out[b, t + 1, DURATION_INDEX] = ((count + total) % NUM_CLASSES + 1) / SPQ
  return out


def _random_prime(seed, batch, num_prime):
  rs = np.random.RandomState(seed)
  prime = np.zeros((batch, num_prime, FRAME_DIM), np.float32)
  prime[..., :NUM_NOTES] = rs.rand(batch, num_prime, NUM_NOTES) < 0.05
  prime[..., DURATION_INDEX] = rs.randint(1, 25, size=(batch, num_prime)) / SPQ
  return prime


def _counting_carry(count0):
  count0 = jnp.asarray(count0, jnp.int32)
  return {"count": count0, "total": jnp.zeros(count0.shape, jnp.float32)}


@pytest.mark.parametrize("num_prime", [1, 4])
def test_generate_matches_reference_exactly(num_prime):
  settings = sampling.SampleSettings(num_frames=7)
  prime = _random_prime(0, batch=3, num_prime=num_prime)
  count0 = np.array([0, 5, 200])
  out = sampling.generate(_counting_step, _counting_carry(count0), jnp.asarray(prime),
                          jax.random.key(0), settings)
  assert out.shape == (3, num_prime + 7, FRAME_DIM)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out[:, :num_prime]), prime)
  np.testing.assert_array_equal(np.asarray(out),
                                _counting_reference(count0, prime, 7))


def test_prime_is_consumed_before_sampling():
  """The first sampled frame reflects every prime frame and the carry after them."""
  settings = sampling.SampleSettings(num_frames=1)
  prime = np.zeros((1, 5, FRAME_DIM), np.float32)
  prime[0, :, DURATION_INDEX] = np.array([1, 1, 1, 1, 2]) / SPQ  # 6 steps in total
  out = sampling.generate(_counting_step, _counting_carry([0]), jnp.asarray(prime),
                          jax.random.key(0), settings)
  first = np.asarray(out[0, 5])
  # Five calls: count 5, so the marker is note 5; class (5 + 6) % 8 = 3.
  np.testing.assert_array_equal(np.flatnonzero(first[:NUM_NOTES]), [5])
  assert first[DURATION_INDEX] == np.float32(4 / SPQ)


def test_make_sampler_matches_generate_and_passes_step_args():
  settings = sampling.SampleSettings(num_frames=5)

  def step_with_offset(frame, carry, offset):
    return _counting_step(frame, {"count": carry["count"] + offset,
                                  "total": carry["total"]})

  prime = _random_prime(1, batch=2, num_prime=3)
  sampler = sampling.make_sampler(step_with_offset, settings)
  out = sampler(_counting_carry([0, 0]), jnp.asarray(prime), jax.random.key(3), None,
                jnp.int32(0))
  np.testing.assert_array_equal(np.asarray(out), _counting_reference([0, 0], prime, 5))
  # An offset of 1 per call shifts the count after n calls by n more.
  out = sampler(_counting_carry([0, 0]), jnp.asarray(prime), jax.random.key(3), None,
                jnp.int32(1))
  assert not np.array_equal(np.asarray(out), _counting_reference([0, 0], prime, 5))


def _uniform_step(frame, carry):
  """Logits 0 everywhere: every note p = 0.5, every duration class equally likely."""
  batch = frame.shape[0]
  return _pred(jnp.zeros((batch, NUM_NOTES)), jnp.zeros((batch, NUM_CLASSES))), carry + 1


@pytest.mark.parametrize("duration_head", ["categorical", "regression"])
def test_same_seed_same_output_different_seed_different_output(duration_head):
  def step(frame, carry):
    pred, carry = _uniform_step(frame, carry)
    if duration_head == "regression":
      pred = _pred(pred.notes.logits, jnp.zeros((frame.shape[0], 2)), regression=True)
    return pred, carry

  settings = sampling.SampleSettings(num_frames=16)
  sampler = sampling.make_sampler(step, settings)
  prime = jnp.asarray(_random_prime(2, batch=2, num_prime=2))
  carry = jnp.zeros((), jnp.int32)
  a = np.asarray(sampler(carry, prime, jax.random.key(7), None))
  b = np.asarray(sampler(carry, prime, jax.random.key(7), None))
  c = np.asarray(sampler(carry, prime, jax.random.key(8), None))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a[:, 2:, :NUM_NOTES], c[:, 2:, :NUM_NOTES])
  assert not np.array_equal(a[:, 2:, DURATION_INDEX], c[:, 2:, DURATION_INDEX])
  # Frames differ from one step to the next (the key is folded per step).
  assert not np.array_equal(a[:, 2], a[:, 3])


def test_compiles_once_for_repeated_shapes():
  traces = []

  def step(frame, carry):
    traces.append(frame.shape)
    return _uniform_step(frame, carry)

  sampler = sampling.make_sampler(step, sampling.SampleSettings(num_frames=4))
  prime = jnp.asarray(_random_prime(3, batch=2, num_prime=3))
  sampler(jnp.int32(0), prime, jax.random.key(0), None).block_until_ready()
  after_first = len(traces)
  assert after_first > 0
  sampler(jnp.int32(5), prime + 0.0, jax.random.key(1), None).block_until_ready()
  sampler(jnp.int32(9), prime, jax.random.key(2), None).block_until_ready()
  assert len(traces) == after_first
  # A new prime length is a new shape: it must retrace (so the counter works).
  sampler(jnp.int32(0), prime[:, :2], jax.random.key(0), None).block_until_ready()
  assert len(traces) > after_first


def test_max_polyphony_keeps_exactly_the_most_probable_sampled_notes():
  rs = np.random.RandomState(0)
  logits = np.full((2, NUM_NOTES), -BIG, np.float32)
  # Row 0: ten notes certain to be sampled with distinct logits; row 1: only two.
  chosen = rs.choice(NUM_NOTES, 10, replace=False)
  logits[0, chosen] = 50.0 + rs.permutation(10)
  logits[1, [3, 90]] = [40.0, 60.0]
  settings = sampling.SampleSettings(max_polyphony=3)
  frame = np.asarray(_sample_frame(
      _pred(logits, np.zeros((2, NUM_CLASSES))), jax.random.key(0), settings))
  expected = np.sort(chosen[np.argsort(-logits[0, chosen])[:3]])
  np.testing.assert_array_equal(np.flatnonzero(frame[0, :NUM_NOTES]), expected)
  np.testing.assert_array_equal(np.flatnonzero(frame[1, :NUM_NOTES]), [3, 90])


def test_max_polyphony_ignores_probable_notes_that_were_not_sampled():
  """Exact against the unlimited draw with the same key: keep its top k by logit."""
  rs = np.random.RandomState(1)
  logits = np.full((STATS_BATCH, NUM_NOTES), -BIG, np.float32)
  logits[:, :8] = rs.normal(size=(STATS_BATCH, 8)).astype(np.float32) * 2
  pred = _pred(logits, np.zeros((STATS_BATCH, 4)), spq=STATS_SPQ)
  key = jax.random.key(11)
  free = np.asarray(_sample_frame(pred, key, STATS))
  limited = np.asarray(_sample_frame(
      pred, key, dataclasses.replace(STATS, max_polyphony=2)))
  expected = np.zeros_like(free[:, :NUM_NOTES])
  for b in range(STATS_BATCH):
    on = np.flatnonzero(free[b, :NUM_NOTES])
    expected[b, on[np.argsort(-logits[b, on], kind="stable")[:2]]] = 1.0
  np.testing.assert_array_equal(limited[:, :NUM_NOTES], expected)
  assert (free[:, :NUM_NOTES].sum(-1) > 2).sum() > 100  # the limit was exercised
  np.testing.assert_array_equal(limited[:, DURATION_INDEX], free[:, DURATION_INDEX])


def _skewed_step(frame, carry):
  """Note logits from -3 to 3 over the pitches, duration logits [2, 1, 0, ...]: every
  temperature and top-p changes what is drawn."""
  batch = frame.shape[0]
  notes = jnp.broadcast_to(jnp.linspace(-3.0, 3.0, NUM_NOTES), (batch, NUM_NOTES))
  duration = jnp.broadcast_to(-jnp.arange(NUM_CLASSES, dtype=jnp.float32), (batch, NUM_CLASSES))
  return _pred(notes, duration), carry + 1


def test_tunable_sampler_matches_make_sampler_and_compiles_once():
  traces = []

  def step(frame, carry):
    traces.append(frame.shape)
    return _skewed_step(frame, carry)

  prime = jnp.asarray(_random_prime(4, batch=2, num_prime=2))
  base = sampling.SampleSettings(num_frames=12, max_polyphony=5)
  tunable = sampling.make_tunable_sampler(step, base)
  outputs = []
  for temperature, top_p in ((1.0, 1.0), (0.5, 0.5), (2.0, 1.0)):
    settings = dataclasses.replace(base, temperature=temperature, top_p=top_p,
                                   duration_temperature=temperature)
    want = np.asarray(sampling.make_sampler(_skewed_step, settings)(
        jnp.int32(0), prime, jax.random.key(3), None))
    before = len(traces)
    got = np.asarray(tunable(jnp.int32(0), prime, jax.random.key(3), None,
                             sampling.tunable_values(settings)))
    np.testing.assert_array_equal(got, want)
    assert len(traces) == before or not outputs  # traced for the first call only
    outputs.append(got)
  assert not np.array_equal(outputs[0], outputs[1])  # the values do reach the draw
  assert sampling.program_settings(base) == sampling.program_settings(
      dataclasses.replace(base, temperature=0.3, top_p=0.2))
  assert sampling.program_settings(base) != sampling.program_settings(
      dataclasses.replace(base, max_polyphony=2))


def _duration_pred(probs):
  duration = np.tile(np.log(probs).astype(np.float32), (STATS_BATCH, 1))
  return _pred(np.zeros((STATS_BATCH, NUM_NOTES)), duration, spq=STATS_SPQ)


def test_categorical_duration_values_and_small_top_p_picks_argmax():
  pred = _duration_pred([0.3, 0.2, 0.35, 0.15])
  got = np.asarray(_sample_frame(
      pred, jax.random.key(0), dataclasses.replace(STATS, top_p=0.01)))
  np.testing.assert_array_equal(got[:, DURATION_INDEX],
                                np.full(STATS_BATCH, 3 / 4, np.float32))
  # Without top-p every class appears; each value is (k + 1) / steps_per_quarter.
  got = np.asarray(_sample_frame(pred, jax.random.key(0), STATS))
  assert set(np.unique(got[:, DURATION_INDEX]).tolist()) == {0.25, 0.5, 0.75, 1.0}


def test_top_p_keeps_the_nucleus_only():
  pred = _duration_pred([0.3, 0.2, 0.35, 0.15])
  # Sorted: 0.35 (class 2), 0.3 (class 0), 0.2, 0.15: mass 0.65 needs classes 2 and 0.
  got = np.asarray(_sample_frame(
      pred, jax.random.key(1), dataclasses.replace(STATS, top_p=0.6)))
  classes, counts = np.unique(np.round(got[:, DURATION_INDEX] * 4) - 1,
                              return_counts=True)
  np.testing.assert_array_equal(classes, [0, 2])
  # Renormalised: class 2 has 0.35 / 0.65 of the mass.
  assert abs(counts[1] / STATS_BATCH - 0.35 / 0.65) < 0.06


def test_temperatures_scale_note_and_duration_probabilities():
  # Every note has logit 1; duration logits [1, 0, 0, 0].
  duration = np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (STATS_BATCH, 1))
  pred = _pred(np.ones((STATS_BATCH, NUM_NOTES)), duration, spq=STATS_SPQ)

  def fractions(temperature, duration_temperature):
    frame = np.asarray(_sample_frame(pred, jax.random.key(2), dataclasses.replace(
        STATS, temperature=temperature, duration_temperature=duration_temperature)))
    return (frame[:, :NUM_NOTES].mean(),
            (frame[:, DURATION_INDEX] == np.float32(0.25)).mean())

  notes, argmax = fractions(0.02, 0.01)  # sigmoid(50) rounds to 1: deterministic
  assert notes == 1.0 and argmax == 1.0
  notes, argmax = fractions(1.0, 1.0)
  assert abs(notes - 1 / (1 + np.exp(-1))) < 0.01
  assert abs(argmax - np.e / (np.e + 3)) < 0.05
  notes, argmax = fractions(50.0, 50.0)  # near uniform
  assert abs(notes - 0.5) < 0.01
  assert abs(argmax - 0.25) < 0.05


def test_regression_durations_are_on_the_grid_and_at_least_one_step():
  batch = STATS_BATCH
  rs = np.random.RandomState(4)
  duration = np.stack([rs.normal(-1.0, 2.0, batch), rs.normal(0.0, 1.0, batch)], -1)
  duration[:10] = [np.log(1e-4), -10.0]  # far below one step
  duration[10:20] = [np.log(1.0), -30.0]  # exactly one quarter
  duration[20:30] = [50.0, 0.0]  # far above the longest duration
  settings = sampling.SampleSettings()
  frame = np.asarray(_sample_frame(  # a grid of 12 steps per quarter, at most 96
      _pred(np.zeros((batch, NUM_NOTES)), duration, regression=True), jax.random.key(4),
      settings))
  steps = frame[:, DURATION_INDEX] * SPQ
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
  assert steps.min() >= 1.0 - 1e-4 and steps.max() <= 96 + 1e-4
  np.testing.assert_array_equal(frame[:10, DURATION_INDEX], np.float32(1 / SPQ))
  np.testing.assert_array_equal(frame[10:20, DURATION_INDEX], np.float32(1.0))
  np.testing.assert_array_equal(frame[20:30, DURATION_INDEX], np.float32(96 / SPQ))
  assert len(np.unique(np.round(steps))) > 20  # really sampled, not constant


def test_regression_duration_temperature_scales_the_spread():
  batch = STATS_BATCH
  duration = np.tile(np.array([np.log(2.0), np.log(0.5)], np.float32), (batch, 1))
  pred = _pred(np.zeros((batch, NUM_NOTES)), duration, regression=True)

  def durations(t):
    frame = _sample_frame(pred, jax.random.key(5), sampling.SampleSettings(
        duration_temperature=t))
    return np.asarray(frame[:, DURATION_INDEX])

  np.testing.assert_array_equal(durations(1e-3), np.full(batch, 2.0, np.float32))
  assert np.std(np.log(durations(1.0))) > 0.4


def test_generate_with_regression_head_end_to_end():
  def step(frame, carry):
    batch = frame.shape[0]
    return _pred(jnp.zeros((batch, NUM_NOTES)), jnp.tile(jnp.array([-2.0, 0.5]), (batch, 1)),
                 regression=True), carry

  settings = sampling.SampleSettings(num_frames=50)
  out = np.asarray(sampling.make_sampler(step, settings)(
      jnp.int32(0), jnp.asarray(_random_prime(5, 2, 1)), jax.random.key(0), None))
  steps = out[:, 1:, DURATION_INDEX] * 12
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
  assert steps.min() >= 1.0 - 1e-4


def test_allowed_pitches_never_sound():
  allowed = np.zeros(NUM_NOTES, bool)
  allowed[10:20] = True
  pred = _pred(np.full((STATS_BATCH, NUM_NOTES), 3.0), np.zeros((STATS_BATCH, 4)), spq=4)
  frame = np.asarray(jax.jit(sampling.sample_frame, static_argnums=2)(
      pred, jax.random.key(0), STATS, jnp.asarray(allowed)))
  assert frame[:, :NUM_NOTES][:, ~allowed].sum() == 0
  assert frame[:, 10:20].mean() > 0.9  # sigmoid(3) ~ 0.95 where allowed
  hash(STATS)  # usable as a static jit argument


@pytest.mark.parametrize("kwargs", [
    {"temperature": 0.0}, {"temperature": -1.0}, {"temperature": float("nan")},
    {"duration_temperature": 0.0}, {"top_p": 0.0}, {"top_p": 1.5},
    {"max_polyphony": -1}, {"num_frames": 0}, {"num_frames": 2.5}, {"temperature": "hot"},
])
def test_invalid_settings_raise(kwargs):
  with pytest.raises(ValueError):
    sampling.SampleSettings(**kwargs)


def test_bad_shapes_raise():
  settings = sampling.SampleSettings(num_frames=2)
  with pytest.raises(ValueError, match="prime"):
    sampling.generate(_uniform_step, jnp.int32(0), jnp.zeros((2, 0, FRAME_DIM)),
                      jax.random.key(0), settings)
  with pytest.raises(ValueError, match="prime"):
    sampling.generate(_uniform_step, jnp.int32(0), jnp.zeros((2, 3, 106)),
                      jax.random.key(0), settings)
  with pytest.raises(ValueError, match="notes"):  # a prediction for one frame, not a batch
    sampling.sample_frame(_pred(np.zeros((NUM_NOTES,)), np.zeros((4,))), jax.random.key(0),
                          settings)

"""Tests for musicgen_jax.models: shapes, causality, context, decoding, learning."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musicgen_jax import losses
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, NUM_NOTES
from musicgen_jax.models import (ModelConfig, apply_model, build_model, decode_step, init_carry,
                                 init_params, is_causal)
from musicgen_jax.models import heads


def durations(pred):
  """The duration head's raw output: categorical logits or regression (mean, log-std)."""
  d = pred.duration
  return d.logits if hasattr(d, "logits") else d.mean_log_std

SEQ_LEN = 8
LONG = 20  # longer than SEQ_LEN: exercises the transformer's sliding context
BATCH = 2
MODELS = ("rnn", "lstm", "bilstm", "transformer")
CAUSAL = ("rnn", "lstm", "transformer")


# Tiny programs on a shared 2-core machine: XLA's cheapest CPU optimisation level
# compiles them 2-3x faster, and these tests compile far more than they run.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def quick_jit(fn):
  """jax.jit(fn), compiled with _FAST_COMPILE once per argument shape and dtype."""
  jitted, executables = jax.jit(fn), {}

  def call(*args):
    leaves, treedef = jax.tree.flatten(args)
    key = (treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
    if key not in executables:
      executables[key] = jitted.lower(*args).compile(_FAST_COMPILE)
    return executables[key](*args)

  return call


def tiny_config(model, **overrides):
  settings = dict(model=model, hidden_size=16, num_layers=2, num_heads=2, seq_len=SEQ_LEN,
                  max_duration_steps=24, note_head="independent")  # test_nade has the other
  settings.update(overrides)
  return ModelConfig(**settings)


def random_frames(seed, batch, time):
  """float32[batch, time, 107]: sparse notes, durations on the 1/12 grid."""
  rng = np.random.default_rng(seed)
  notes = rng.random((batch, time, NUM_NOTES)) < 0.08
  steps = rng.integers(1, 30, size=(batch, time, 1))
  return jnp.asarray(np.concatenate([notes, steps / 12.0], axis=-1), jnp.float32)


def params_for(cfg):
  """Shared parameters: dtype and dropout do not change them, so they are reused."""
  return _params(dataclasses.replace(cfg, dtype="float32", dropout=0.0))


@functools.cache
def _params(cfg):
  """Random float32 parameters of init_params' structure, made on the host.

  Tracing init (eval_shape) compiles nothing; these tests check equalities that
  hold for any parameters. The overfitting tests use init_params itself.
  """
  shapes = jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))
  rng = np.random.default_rng(42)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(scale=0.3, size=s.shape).astype(np.float32)), shapes)


@functools.cache
def jitted_apply(cfg, train=False):
  return quick_jit(lambda params, frames, lengths, rng: apply_model(
      cfg, params, frames, train=train, rng=rng, lengths=lengths))


def predict(cfg, frames, lengths=None, *, params=None, train=False, rng=None):
  """Jitted apply_model; bilstm always gets lengths, so calls share one trace per shape."""
  params = params_for(cfg) if params is None else params
  if not is_causal(cfg) and lengths is None:
    lengths = jnp.full(frames.shape[:1], frames.shape[1], jnp.int32)
  return jitted_apply(cfg, train)(params, frames, lengths, rng)


@pytest.mark.parametrize("duration_head", ["categorical", "regression"])
@pytest.mark.parametrize("model", MODELS)
def test_output_shapes_and_float32_params(model, duration_head):
  cfg = tiny_config(model, duration_head=duration_head, dtype="bfloat16")
  frames = jnp.zeros((3, 5, FRAME_DIM))
  # eval_shape traces init_with_output without compiling it.
  prediction, variables = jax.eval_shape(
      lambda: build_model(cfg).init_with_output(jax.random.key(0), frames))
  time = 5 if is_causal(cfg) else 1
  width = 24 if duration_head == "categorical" else 2
  assert prediction.notes.logits.shape == (3, time, NUM_NOTES)
  assert durations(prediction).shape == (3, time, width)
  assert prediction.notes.logits.dtype == jnp.float32
  assert durations(prediction).dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))


def test_is_causal():
  assert [is_causal(tiny_config(m)) for m in MODELS] == [True, True, False, True]


def test_bad_inputs_and_configs_are_refused():
  cfg = tiny_config("lstm")
  with pytest.raises(ValueError, match="107"):
    apply_model(cfg, params_for(cfg), jnp.zeros((2, 4, 88)))
  with pytest.raises(ValueError, match="divisible"):
    init_params(tiny_config("transformer", hidden_size=18, num_heads=4), jax.random.key(0))


@pytest.mark.parametrize("model", CAUSAL)
def test_causal_models_are_causal(model):
  cfg = tiny_config(model)
  frames = random_frames(0, BATCH, LONG)
  changed = frames.at[:, 10, :5].set(1.0 - frames[:, 10, :5]).at[:, 10, DURATION_INDEX].set(5.0)
  before, after = predict(cfg, frames), predict(cfg, changed)
  np.testing.assert_array_equal(before.notes.logits[:, :10], after.notes.logits[:, :10])
  np.testing.assert_array_equal(durations(before)[:, :10], durations(after)[:, :10])
  assert np.abs(before.notes.logits[:, 10:] - after.notes.logits[:, 10:]).max() > 1e-4


def test_transformer_context_is_seq_len_frames_per_layer():
  # Each layer attends to the last seq_len positions, so with 2 layers frame 3
  # reaches outputs 3 .. 3 + 2 * (seq_len - 1) = 17 and no further.
  cfg = tiny_config("transformer")
  frames = random_frames(1, BATCH, LONG)
  changed = frames.at[:, 3, :20].set(1.0)
  before, after = predict(cfg, frames), predict(cfg, changed)
  assert np.abs(before.notes.logits[:, 17] - after.notes.logits[:, 17]).max() > 1e-4
  np.testing.assert_allclose(before.notes.logits[:, 18:], after.notes.logits[:, 18:], atol=1e-5)
  np.testing.assert_allclose(durations(before)[:, 18:], durations(after)[:, 18:], atol=1e-5)


def test_one_layer_transformer_on_a_long_sequence_equals_a_sliding_window():
  cfg = tiny_config("transformer", num_layers=1)
  frames = random_frames(1, BATCH, LONG)
  whole = predict(cfg, frames)
  for end in (SEQ_LEN - 1, 12, LONG - 1):
    start = end - SEQ_LEN + 1
    # The window alone, right padded to LONG frames (causal: padding comes after).
    padding = ((0, 0), (0, LONG - SEQ_LEN), (0, 0))
    window = predict(cfg, jnp.pad(frames[:, start:end + 1], padding))
    window = jax.tree.map(lambda a: a[:, :SEQ_LEN], window)
    np.testing.assert_allclose(whole.notes.logits[:, end], window.notes.logits[:, -1], atol=1e-4)
    np.testing.assert_allclose(durations(whole)[:, end], durations(window)[:, -1], atol=1e-4)


def test_bilstm_reads_both_directions():
  cfg = tiny_config("bilstm")
  frames = random_frames(2, BATCH, SEQ_LEN)
  base = predict(cfg, frames)
  first = predict(cfg, frames.at[:, 0, :20].set(1.0))
  last = predict(cfg, frames.at[:, -1, :20].set(1.0))
  assert base.notes.logits.shape == (BATCH, 1, NUM_NOTES)
  assert np.abs(base.notes.logits - first.notes.logits).max() > 1e-4
  assert np.abs(base.notes.logits - last.notes.logits).max() > 1e-4


def test_bilstm_ignores_padding_beyond_lengths():
  cfg = tiny_config("bilstm")
  frames = random_frames(3, BATCH, SEQ_LEN)
  lengths = jnp.asarray([3, 5], jnp.int32)
  garbage = frames.at[0, 3:].set(7.0).at[1, 5:].set(-3.0)
  padded = predict(cfg, garbage, lengths)
  zeros = frames.at[0, 3:].set(0.0).at[1, 5:].set(0.0)
  clean = predict(cfg, zeros, lengths)
  np.testing.assert_allclose(padded.notes.logits, clean.notes.logits, atol=1e-5)
  np.testing.assert_allclose(durations(padded), durations(clean), atol=1e-5)
  # The valid frames are read: one more valid frame changes the prediction.
  longer = predict(cfg, frames, jnp.asarray([4, 5], jnp.int32))
  assert np.abs(longer.notes.logits[0] - clean.notes.logits[0]).max() > 1e-4
  np.testing.assert_allclose(longer.notes.logits[1], clean.notes.logits[1], atol=1e-5)


@functools.cache
def scanned_decode(cfg):
  """jit(lax.scan(decode_step)) over frames [batch, time, 107] -> Prediction [batch, time]."""

  def run(params, frames):
    step = lambda carry, frame: decode_step(cfg, params, frame, carry)[::-1]
    carry, predictions = jax.lax.scan(step, init_carry(cfg, frames.shape[0]),
                                      jnp.swapaxes(frames, 0, 1))
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), predictions), carry

  return quick_jit(run)


@pytest.mark.parametrize("model", MODELS)
def test_incremental_decoding_equals_full_apply(model):
  cfg = tiny_config(model)
  frames = random_frames(4, BATCH, LONG)
  stepped, carry = scanned_decode(cfg)(params_for(cfg), frames)
  assert stepped.notes.logits.shape == (BATCH, LONG, NUM_NOTES)
  if is_causal(cfg):
    full = predict(cfg, frames)
    np.testing.assert_allclose(stepped.notes.logits, full.notes.logits, atol=1e-4)
    np.testing.assert_allclose(durations(stepped), durations(full), atol=1e-4)
  else:
    # Step t sees the last seq_len frames up to t, fewer at the start.
    for t in (0, 4, SEQ_LEN - 1, SEQ_LEN, LONG - 1):
      start = max(0, t - SEQ_LEN + 1)
      window = jnp.zeros((BATCH, SEQ_LEN, FRAME_DIM)).at[:, :t + 1 - start].set(
          frames[:, start:t + 1])
      full = predict(cfg, window, jnp.full((BATCH,), t + 1 - start, jnp.int32))
      np.testing.assert_allclose(stepped.notes.logits[:, t], full.notes.logits[:, 0], atol=1e-4)
      np.testing.assert_allclose(durations(stepped)[:, t], durations(full)[:, 0], atol=1e-4)
  # The carry never grows with the number of frames fed.
  fresh = init_carry(cfg, BATCH)
  assert jax.tree.map(jnp.shape, carry) == jax.tree.map(jnp.shape, fresh)
  if model == "transformer":
    assert int(carry.position) == LONG


def _overfit(cfg, steps=100):
  frames = random_frames(5, 4, SEQ_LEN + 1)
  inputs, targets = frames[:, :-1], frames[:, 1:]
  mask = jnp.ones(targets.shape[:2])
  optimizer = optax.adam(1e-2)
  params = init_params(cfg, jax.random.key(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))

  def loss_fn(params):
    pred = apply_model(cfg, params, inputs)
    return losses.loss_and_metrics(pred, targets, mask)[0]

  def train_step(carry, _):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  train = quick_jit(lambda params: jax.lax.scan(
      train_step, (params, optimizer.init(params)), length=steps)[1])
  return np.asarray(train(params))


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_tiny_model_overfits_tiny_set(model):
  history = _overfit(tiny_config(model, num_layers=1))
  assert np.all(np.isfinite(history))
  assert history[-1] < 0.4 * history[0], (history[0], history[-1])


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_bfloat16_compute_gives_finite_float32_close_to_float32(model):
  cfg32 = tiny_config(model)
  cfg16 = tiny_config(model, dtype="bfloat16")
  frames = random_frames(6, BATCH, LONG)
  params = params_for(cfg32)
  pred16 = predict(cfg16, frames, params=params)
  pred32 = predict(cfg32, frames)
  assert pred16.notes.logits.dtype == jnp.float32 and durations(pred16).dtype == jnp.float32
  assert np.all(np.isfinite(pred16.notes.logits)) and np.all(np.isfinite(durations(pred16)))
  mask = jnp.ones(frames.shape[:2])
  loss16, _ = losses.loss_and_metrics(pred16, frames, mask)
  loss32, _ = losses.loss_and_metrics(pred32, frames, mask)
  np.testing.assert_allclose(loss16, loss32, rtol=0.05)


def test_dropout_only_when_training():
  cfg = tiny_config("lstm", dropout=0.5)
  frames = random_frames(7, BATCH, LONG)
  evaluated = predict(cfg, frames)
  without_dropout = predict(tiny_config("lstm"), frames)
  np.testing.assert_allclose(evaluated.notes.logits, without_dropout.notes.logits, atol=1e-6)
  trained = predict(cfg, frames, train=True, rng=jax.random.key(1))
  trained_again = predict(cfg, frames, train=True, rng=jax.random.key(2))
  assert np.abs(trained.notes.logits - evaluated.notes.logits).max() > 1e-3
  assert np.abs(trained.notes.logits - trained_again.notes.logits).max() > 1e-3
  with pytest.raises(ValueError, match="rng"):
    apply_model(cfg, params_for(cfg), frames, train=True)


def test_duration_feature_is_log1p_of_quarters():
  frames = jnp.zeros((1, 3, FRAME_DIM)).at[0, :, DURATION_INDEX].set(jnp.asarray([0., 1., 7.]))
  frames = frames.at[0, 1, 3].set(1.0)
  features = heads.input_features(frames)
  np.testing.assert_allclose(features[0, :, DURATION_INDEX], np.log1p([0., 1., 7.]), rtol=1e-6)
  np.testing.assert_array_equal(features[..., :NUM_NOTES], frames[..., :NUM_NOTES])
  assert isinstance(build_model(tiny_config("lstm")), nn.Module)

"""The recurrent loops with a hand-written backward pass against jax.grad of the plain loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax.models import cells

TIME, BATCH, HIDDEN = 7, 3, 5


def _plain_lstm(projected, w_h, bias, carry):
  def step(carry, x_t):
    c, h = carry
    gates = x_t + (jnp.dot(h.astype(w_h.dtype), w_h) + bias)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h
  return jax.lax.scan(step, carry, projected)


def _plain_simple(projected, w_h, bias, h):
  def step(h, x_t):
    h = jnp.tanh(x_t + bias + jnp.dot(h.astype(w_h.dtype), w_h))
    return h, h
  return jax.lax.scan(step, h, projected)


def _args(gates, seed=0):
  keys = jax.random.split(jax.random.key(seed), 5)
  projected = jax.random.normal(keys[0], (TIME, BATCH, gates * HIDDEN))
  w_h = 0.5 * jax.random.normal(keys[1], (HIDDEN, gates * HIDDEN))
  bias = 0.1 * jax.random.normal(keys[2], (gates * HIDDEN,))
  h = 0.3 * jax.random.normal(keys[3], (BATCH, HIDDEN))
  if gates == 1:
    return projected, w_h, bias, h
  return projected, w_h, bias, (0.3 * jax.random.normal(keys[4], (BATCH, HIDDEN)), h)


def _loss(fn):
  """A scalar that reads every output (the sequence and the final carry) with weights."""
  def loss(*args):
    carry, hs = fn(*args)
    weights = jnp.arange(hs.size, dtype=jnp.float32).reshape(hs.shape) / hs.size
    leaves = jax.tree.leaves(carry)
    return jnp.sum(jnp.sin(hs) * weights) + sum(jnp.sum(leaf ** 2) for leaf in leaves)
  return loss


@pytest.mark.parametrize("fast, plain, gates", [(cells.lstm_scan, _plain_lstm, 4),
                                                (cells.simple_scan, _plain_simple, 1)])
def test_values_and_gradients_match_the_plain_loop(fast, plain, gates):
  args = _args(gates)
  np.testing.assert_allclose(fast(*args)[1], plain(*args)[1], rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(fast(*args)[0]), jax.tree.leaves(plain(*args)[0])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  grads = jax.grad(_loss(fast), argnums=(0, 1, 2, 3))(*args)
  expected = jax.grad(_loss(plain), argnums=(0, 1, 2, 3))(*args)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    assert float(jnp.abs(want).max()) > 1e-3  # every gradient is exercised
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_one_step_and_bfloat16_compute():
  """A single step (decoding) and bf16 compute (the gates in bf16, the LSTM state float32)."""
  projected, w_h, bias, carry = _args(4, seed=1)
  one = _loss(cells.lstm_scan)(projected[:1], w_h, bias, carry)
  np.testing.assert_allclose(one, _loss(_plain_lstm)(projected[:1], w_h, bias, carry), rtol=1e-6)
  low = (projected.astype(jnp.bfloat16), w_h.astype(jnp.bfloat16), bias.astype(jnp.bfloat16))
  (c, h), hs = cells.lstm_scan(*low, carry)
  assert c.dtype == h.dtype == hs.dtype == jnp.float32
  grads = jax.grad(_loss(cells.lstm_scan), argnums=(0, 1, 2))(*low, carry)
  expected = jax.grad(_loss(_plain_lstm), argnums=(0, 1, 2))(*low, carry)
  for got, want in zip(grads, expected):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=0.05, atol=0.02)


def test_two_directions_in_one_loop_equal_two_loops():
  """A stacked pair of layers (a bidirectional layer's two directions) runs as two would."""
  first, second = _args(4, seed=2), _args(4, seed=3)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b], axis=1 if a.ndim == 3 else 0),
                         first, second)
  stacked = (stacked[0], stacked[1], stacked[2], stacked[3])
  (c, h), hs = cells.lstm_scan(*stacked)
  for k, args in enumerate((first, second)):
    (c_k, h_k), hs_k = cells.lstm_scan(*args)
    np.testing.assert_allclose(hs[:, k], hs_k, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c[k], c_k, rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda *a: jnp.sum(jnp.sin(cells.lstm_scan(*a)[1])), argnums=(0, 1, 2))(
      *stacked)
  for k, args in enumerate((first, second)):
    want = jax.grad(lambda *a: jnp.sum(jnp.sin(cells.lstm_scan(*a)[1])), argnums=(0, 1, 2))(
        *args)
    np.testing.assert_allclose(grads[0][:, k], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1][k], want[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[2][k], want[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["lstm", "bilstm"])
def test_cudnn_packing_gives_the_scans_nll_and_gradients(model, monkeypatch):
  """The cuDNN path's weight packing, run through jax.experimental.rnn.lstm_ref on CPU: the
  same NLL and gradients as the scan, for the causal LSTM from a carried state and for the
  bidirectional LSTM over right-padded windows."""
  from musicgen_jax import losses
  from musicgen_jax.models import ModelConfig, apply_model, cudnn, init_carry, init_params
  monkeypatch.setattr(cudnn, "KERNEL", "reference")
  rng = np.random.default_rng(0)
  frames = np.zeros((3, 9, 107), np.float32)
  frames[..., :106] = rng.random((3, 9, 106)) < 0.08
  frames[..., 106] = rng.integers(1, 13, (3, 9)) / 12
  frames = jnp.asarray(frames)
  configs = {impl: ModelConfig(model=model, hidden_size=8, num_layers=2, seq_len=8,
                               note_head="independent", rnn_impl=impl)
             for impl in ("scan", "cudnn")}
  params = init_params(configs["scan"], jax.random.key(1))

  def nll(params, impl):
    cfg = configs[impl]
    if model == "bilstm":
      pred = apply_model(cfg, params, frames[:, :-1], lengths=jnp.array([8, 5, 3]))
      return losses.frame_terms(pred, frames[:, -1:])["nll_total"].sum()
    carry = jax.tree.map(lambda x: 0.2 * jnp.ones_like(x), init_carry(cfg, 3))
    pred, carry = apply_model(cfg, params, frames[:, :-1], carry=carry)
    terms = losses.frame_terms(pred, frames[:, 1:])["nll_total"].sum()
    return terms + sum(jnp.sum(c) for c in jax.tree.leaves(carry))

  (value, grads), (want, want_grads) = (jax.value_and_grad(nll)(params, impl)
                                        for impl in ("cudnn", "scan"))
  np.testing.assert_allclose(value, want, rtol=1e-5)
  flat, flat_want = jax.tree.leaves(grads), jax.tree.leaves(want_grads)
  assert len(flat) == len(flat_want)
  for got, expected in zip(flat, flat_want):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_cudnn_is_refused_where_it_cannot_run():
  from musicgen_jax.models import cudnn
  assert cudnn.resolve("auto", "lstm", "float32") == "scan"  # this CPU
  assert cudnn.resolve("scan", "lstm", "float32") == "scan"
  with pytest.raises(ValueError, match="needs a GPU"):
    cudnn.resolve("cudnn", "lstm", "float32")
  with pytest.raises(ValueError, match="only the lstm and bilstm"):
    cudnn.resolve("cudnn", "rnn", "float32")

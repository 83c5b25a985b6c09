"""The time loops of the recurrent layers, with a hand-written backward pass.

A layer's input projection is one matmul over the whole sequence before the loop (as cuDNN
does), so the loop holds only the recurrent matmul and the gates. Differentiating that
loop with `jax.grad` makes every backward step also accumulate the recurrent kernel's
gradient (a [H, batch] x [batch, G*H] matmul and an add into the running sum) and recompute
the gates' derivatives from stacked residuals. Here the forward loop saves each step's gate
activations, the backward loop does only what must be sequential (the elementwise chain
rule and one matmul by the transposed recurrent kernel per step), and the kernel's and
bias's gradients are single matmuls and sums over every step at once after it.

The forward arithmetic is the same as the plain loop's: `lstm_scan` and `simple_scan` give
the values `jax.lax.scan` over the same step gives, and gradients equal within float
rounding (tests/test_cells.py checks both).

Shapes: projected [time, *stack, batch, G*H] (time major), w_h [*stack, H, G*H], bias
[*stack, G*H]; the LSTM's carry (c, h) is float32[*stack, batch, H]; a simple cell's carry h
is in the compute dtype. `stack` is empty for one layer, or (2,) for the two directions of a
bidirectional layer, which then run in one loop with batched matmuls.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

UNROLL = 1  # time steps per loop iteration; on CPU larger unrolls were slower (speed report)


def _unroll(time: int) -> int:
  return max(1, min(UNROLL, time))


def _transposed(w):
  return jnp.swapaxes(w, -1, -2)


def _kernel_grads(h_prev, d_pre, w_h, bias):
  """The recurrent kernel's and the bias's gradients, summed over every step and row: one
  [H, time * batch] x [time * batch, G*H] matmul (per stacked layer)."""
  h_prev = h_prev.astype(jnp.float32)
  if w_h.ndim == 2:
    d_w = jnp.dot(h_prev.reshape(-1, h_prev.shape[-1]).T, d_pre.reshape(-1, d_pre.shape[-1]))
  else:
    d_w = jnp.einsum("t...bh,t...bg->...hg", h_prev, d_pre)
  return d_w.astype(w_h.dtype), d_pre.sum(axis=(0, -2)).astype(bias.dtype)


# The LSTM ---------------------------------------------------------------------------------


def _activations(gates):
  """[..., 4H] pre-activations -> sigmoid on the i, f, o lanes and tanh on the g lanes, in
  one elementwise pass (each lane picks its function; no split and concatenate)."""
  hidden = gates.shape[-1] // 4
  lane = jnp.arange(gates.shape[-1])
  is_g = (lane >= 2 * hidden) & (lane < 3 * hidden)
  return jnp.where(is_g, jnp.tanh(gates), jax.nn.sigmoid(gates))


def _lstm_step(w_h, bias, carry, x_t):
  """One step: (c, h) -> ((c', h'), (the pre-activations, c', and h as the step read it))."""
  c, h_in = carry
  gates = x_t + (jnp.matmul(h_in.astype(w_h.dtype), w_h) + bias[..., None, :])
  i, f, g, o = jnp.split(_activations(gates), 4, axis=-1)
  c = f * c + i * g
  return (c, o * jnp.tanh(c)), (gates, c, h_in)


def _lstm_forward(projected, w_h, bias, carry):
  step = functools.partial(_lstm_step, w_h, bias)
  carry_out, (gates, cs, h_prev) = jax.lax.scan(step, carry, projected,
                                                unroll=_unroll(projected.shape[0]))
  o = jax.nn.sigmoid(gates[..., 3 * w_h.shape[-2]:])
  hs = o * jnp.tanh(cs)  # the outputs, computed for every step at once
  return carry_out, hs, (gates, cs, h_prev)


@jax.custom_vjp
def lstm_scan(projected, w_h, bias, carry):
  """Runs an LSTM layer's loop: -> ((c, h) after the last step, h float32[time, batch, H])."""
  carry_out, hs, _ = _lstm_forward(projected, w_h, bias, carry)
  return carry_out, hs


def _lstm_fwd(projected, w_h, bias, carry):
  carry_out, hs, saved = _lstm_forward(projected, w_h, bias, carry)
  return (carry_out, hs), (w_h, bias, carry[0], saved)


def _lstm_bwd(residuals, cotangents):
  w_h, bias, c0, (gates, cs, h_prev) = residuals
  (dc_last, dh_last), dhs = cotangents
  c_prev = jnp.concatenate([c0[None], cs[:-1]], axis=0)
  w_t = _transposed(w_h).astype(jnp.float32)

  def step(carry, xs):
    dc_next, dh_next = carry
    dh_out, pre, c, c_before = xs
    i, f, g, o = jnp.split(_activations(pre.astype(jnp.float32)), 4, axis=-1)
    dh = dh_out + dh_next
    tanh_c = jnp.tanh(c)
    dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
    d_gates = jnp.concatenate([dc * g * i * (1.0 - i), dc * c_before * f * (1.0 - f),
                               dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)], axis=-1)
    return (dc * f, jnp.matmul(d_gates, w_t)), d_gates

  (dc0, dh0), d_gates = jax.lax.scan(step, (dc_last, dh_last), (dhs, gates, cs, c_prev),
                                     reverse=True, unroll=_unroll(gates.shape[0]))
  d_w, d_bias = _kernel_grads(h_prev, d_gates, w_h, bias)
  return d_gates.astype(gates.dtype), d_w, d_bias, (dc0, dh0)


lstm_scan.defvjp(_lstm_fwd, _lstm_bwd)


# The simple (Elman) cell ------------------------------------------------------------------


def _simple_step(w_h, bias, h, x_t):
  h = jnp.tanh(x_t + bias[..., None, :] + jnp.matmul(h.astype(w_h.dtype), w_h))
  return h, h


def _simple_forward(projected, w_h, bias, h):
  step = functools.partial(_simple_step, w_h, bias)
  return jax.lax.scan(step, h, projected, unroll=_unroll(projected.shape[0]))


@jax.custom_vjp
def simple_scan(projected, w_h, bias, h):
  """Runs an Elman layer's loop: -> (h after the last step, h [time, batch, H])."""
  return _simple_forward(projected, w_h, bias, h)


def _simple_fwd(projected, w_h, bias, h):
  h_last, hs = _simple_forward(projected, w_h, bias, h)
  return (h_last, hs), (w_h, bias, h, hs)


def _simple_bwd(residuals, cotangents):
  w_h, bias, h0, hs = residuals
  dh_last, dhs = cotangents
  w_t = _transposed(w_h).astype(jnp.float32)

  def step(dh_next, xs):
    dh_out, h = xs
    h = h.astype(jnp.float32)
    d_pre = (dh_out.astype(jnp.float32) + dh_next) * (1.0 - h * h)
    return jnp.matmul(d_pre, w_t), d_pre

  dh0, d_pre = jax.lax.scan(step, dh_last.astype(jnp.float32), (dhs, hs), reverse=True,
                            unroll=_unroll(hs.shape[0]))
  h_prev = jnp.concatenate([h0[None].astype(hs.dtype), hs[:-1]], axis=0)
  d_w, d_bias = _kernel_grads(h_prev, d_pre, w_h, bias)
  return d_pre.astype(hs.dtype), d_w, d_bias, dh0.astype(h0.dtype)


simple_scan.defvjp(_simple_fwd, _simple_bwd)

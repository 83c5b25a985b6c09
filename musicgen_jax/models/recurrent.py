"""Recurrent models: a causal RNN/LSTM stack, and a bidirectional LSTM over a window.

Each layer projects its whole input sequence with one matmul before the time loop (as
cuDNN does), so the `lax.scan` over time holds only the recurrent matmul and the gates.
Parameters keep the names and shapes of Flax's `SimpleCell` and `OptimizedLSTMCell`.
"""

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.models import cells, cudnn
from musicgen_jax.models.config import ModelConfig
from musicgen_jax.models.distributions import FrameDistribution
from musicgen_jax.models.heads import (FrameHead, check_frames, compute_dtype, frame_width,
                                      input_features)
from musicgen_jax.models.protocol import STATE, WINDOW, Context, FrameWindow, empty_window
from musicgen_jax.models.protocol import push_frame

Carry = Any  # per layer: simple cell float[batch, hidden]; LSTM (c, h) float32[batch, hidden]
SIMPLE, LSTM_CELL = "simple", "lstm_cell"  # the cells a layer can run
LSTM_GATES = ("i", "f", "g", "o")


class RecurrentLayer(nn.Module):
  """One Elman RNN or LSTM layer over a sequence.

  Attributes:
    kind: SIMPLE (h' = tanh(W_i x + b_i + W_h h)) or LSTM_CELL (gates i, f, g, o).
    features: hidden units.
    dtype: compute dtype; the LSTM's (c, h) stay float32.
  """

  kind: str
  features: int
  dtype: Any = jnp.float32
  impl: str = "scan"  # or "cudnn" (LSTM cells; see models.cudnn)

  @nn.compact
  def weights(self, inputs):
    """(input kernel [D, G*H], recurrent kernel [H, G*H], bias [G*H]), G gates."""
    h = jnp.zeros((1, self.features), jnp.float32)
    params = lambda name, use_bias, init, x: nn.recurrent.DenseParams(
        self.features, use_bias=use_bias, kernel_init=init, name=name)(x)
    lecun, orthogonal = nn.initializers.lecun_normal(), nn.initializers.orthogonal()
    if self.kind == SIMPLE:
      w_i, b = params("i", True, lecun, inputs)
      w_h, _ = params("h", False, orthogonal, h)
      return w_i, w_h, b
    w_i = [params(f"i{g}", False, lecun, inputs)[0] for g in LSTM_GATES]
    hidden = [params(f"h{g}", True, orthogonal, h) for g in LSTM_GATES]
    return (jnp.concatenate(w_i, axis=-1), jnp.concatenate([k for k, _ in hidden], axis=-1),
            jnp.concatenate([b for _, b in hidden], axis=-1))

  def project(self, inputs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """inputs float[time, batch, D] (time major, as the loop reads them) -> (the input
    projection of every step [time, batch, G*H], recurrent kernel, bias), in the compute
    dtype."""
    w_i, w_h, bias = self.weights(inputs)
    dtype = self.dtype
    projected = jnp.dot(inputs.astype(dtype), w_i.astype(dtype))
    return projected, w_h.astype(dtype), bias.astype(dtype)

  def __call__(self, inputs: jax.Array, carry: Carry) -> tuple[Carry, jax.Array]:
    """inputs float[time, batch, D], carry -> (carry after the last step, h [time, batch, H])."""
    if self.impl == "cudnn" and inputs.shape[0] > 1:  # one step (decoding) keeps the scan
      lengths = jnp.full((inputs.shape[1],), inputs.shape[0], jnp.int32)
      hs, (c, h) = cudnn.lstm(inputs, [self.weights(inputs)],
                              jax.tree.map(lambda x: x[None], carry), lengths, False)
      return (c[0], h[0]), hs
    scan = cells.simple_scan if self.kind == SIMPLE else cells.lstm_scan
    return scan(*self.project(inputs), carry)


def _impl(cfg: ModelConfig) -> str:
  return cudnn.resolve(cfg.rnn_impl, cfg.model, cfg.dtype)


def zero_carry(cfg: ModelConfig, batch_size: int, cell: str) -> tuple[Carry, ...]:
  """The state before any frame, per layer: a simple cell's float[batch, hidden] in the
  compute dtype; an LSTM's (c, h) float32[batch, hidden] (a precise cell state over long
  pieces under bf16 compute)."""
  if cell == SIMPLE:
    zeros = jnp.zeros((batch_size, cfg.hidden_size), compute_dtype(cfg))
    return tuple(zeros for _ in range(cfg.num_layers))
  zeros = jnp.zeros((batch_size, cfg.hidden_size), jnp.float32)
  return tuple((zeros, zeros) for _ in range(cfg.num_layers))


class CausalRecurrent(nn.Module):
  """`num_layers` stacked RNN or LSTM layers, then the head; output t predicts frame t + 1.

  Its state carries over a whole piece: evaluation runs piece by piece in chunks, and
  training may carry it across consecutive windows of a piece (truncated BPTT).

  Subclasses name the cell: `ElmanRNN` (the study's RNN) and `LSTM`.

  Attributes:
    cfg: model config.
  """

  cfg: ModelConfig
  cell: ClassVar[str] = LSTM_CELL
  causal: ClassVar[bool] = True
  carries_state: ClassVar[bool] = True

  def setup(self):
    cfg = self.cfg
    for layer in range(cfg.num_layers):
      setattr(self, f"layer_{layer}",
              RecurrentLayer(self.cell, cfg.hidden_size, compute_dtype(cfg), _impl(cfg)))
    self.dropout = nn.Dropout(rate=cfg.dropout)
    self.heads = FrameHead(cfg)

  @staticmethod
  def context(cfg: ModelConfig) -> Context:
    del cfg
    return Context(STATE)

  @staticmethod
  def train_window(cfg: ModelConfig) -> int:
    return cfg.seq_len

  @classmethod
  def init_carry(cls, cfg: ModelConfig, batch_size: int) -> tuple[Carry, ...]:
    return zero_carry(cfg, batch_size, cls.cell)

  def hidden(self, frames, carry, train: bool = False):
    """frames float[batch, time, 107], carry -> (h float[batch, time, hidden], carry)."""
    x = input_features(frames, self.cfg.steps_per_quarter).astype(compute_dtype(self.cfg))
    x = jnp.swapaxes(x, 0, 1)  # time major through the stack: one transpose in, one out
    carries = []
    for layer in range(self.cfg.num_layers):
      layer_carry, x = getattr(self, f"layer_{layer}")(x, carry[layer])
      carries.append(layer_carry)
      x = self.dropout(x, deterministic=not train)
    return jnp.swapaxes(x, 0, 1), tuple(carries)

  def __call__(self, frames: jax.Array, *, train: bool = False,
               lengths: jax.Array | None = None, carry: tuple[Carry, ...] | None = None,
               return_carry: bool = False):
    """Runs the stack over a sequence.

    Args:
      frames: float32[batch, time, 107] raw frames.
      train: enables dropout (needs the 'dropout' rng).
      lengths: ignored (causal: right padding cannot reach valid positions).
      carry: the state to start from (`init_carry`); zeros when None.
      return_carry: also return the state after the last frame.

    Returns:
      FrameDistribution with fields [batch, time, ...]; with return_carry, (it, carry).
    """
    del lengths
    check_frames(frames, self.cfg)
    if carry is None:
      carry = self.init_carry(self.cfg, frames.shape[0])
    x, carry = self.hidden(frames, carry, train)
    prediction = self.heads(x)
    return (prediction, carry) if return_carry else prediction

  def decode(self, frame: jax.Array, carry) -> tuple[FrameDistribution, Any]:
    """One frame float32[batch, 107] -> (the next frame's distribution [batch, ...], carry)."""
    x, carry = self.hidden(frame[:, None, :], carry)
    return self.heads(x[:, 0]), carry


class ElmanRNN(CausalRecurrent):
  """The study's RNN: stacked simple tanh cells."""

  cell: ClassVar[str] = SIMPLE


class LSTM(CausalRecurrent):
  """Stacked LSTM layers."""

  cell: ClassVar[str] = LSTM_CELL


def _reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
  """x [time, batch, ...]: reverses each row's first lengths[b] steps in place; the padding
  stays where it is."""
  time = jnp.arange(x.shape[0])
  index = jnp.where(time[:, None] < lengths[None, :], lengths[None, :] - 1 - time[:, None],
                    time[:, None])
  return jnp.take_along_axis(x, index[:, :, None], axis=0)


class BidirectionalLSTM(nn.Module):
  """Stacked bidirectional LSTM layers reading a window; predicts the frame after it.

  The last layer's forward state after the last valid frame and its backward state after
  reading back to the first frame are concatenated and fed to the head.

  Attributes:
    cfg: model config.
  """

  cfg: ModelConfig
  causal: ClassVar[bool] = False
  carries_state: ClassVar[bool] = False

  def setup(self):
    cfg = self.cfg
    for layer in range(cfg.num_layers):
      for direction in ("forward", "backward"):
        setattr(self, f"layer_{layer}_{direction}",
                RecurrentLayer(LSTM_CELL, cfg.hidden_size, compute_dtype(cfg), _impl(cfg)))
    self.dropout = nn.Dropout(rate=cfg.dropout)
    self.heads = FrameHead(cfg)

  @staticmethod
  def context(cfg: ModelConfig) -> Context:
    return Context(WINDOW, cfg.seq_len)

  @staticmethod
  def train_window(cfg: ModelConfig) -> int:
    return cfg.seq_len  # its input: seq_len frames, then the one it predicts

  @staticmethod
  def init_carry(cfg: ModelConfig, batch_size: int) -> FrameWindow:
    return empty_window(cfg.seq_len, batch_size, frame_width(cfg))

  def summary(self, frames: jax.Array, lengths: jax.Array | None,
              train: bool = False) -> jax.Array:
    """float[batch, 2 * hidden]: the last layer's final forward and backward states."""
    batch, time = frames.shape[:2]
    lengths = (jnp.full((batch,), time, jnp.int32) if lengths is None else
               jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (batch,)))
    zeros = jnp.zeros((2, batch, self.cfg.hidden_size), jnp.float32)
    x = input_features(frames, self.cfg.steps_per_quarter).astype(compute_dtype(self.cfg))
    x = jnp.swapaxes(x, 0, 1)  # time major
    for layer in range(self.cfg.num_layers):
      forward, backward = self._both_ways(layer, x, lengths, zeros)
      x = jnp.concatenate([forward, backward], axis=-1)
      if layer + 1 < self.cfg.num_layers:
        x = self.dropout(x, deterministic=not train)
    last = jnp.take_along_axis(forward, (lengths - 1)[None, :, None], axis=0)[0]
    summary = jnp.concatenate([last, backward[0]], axis=-1)
    return self.dropout(summary, deterministic=not train)

  def _both_ways(self, layer: int, x, lengths, zeros):
    """Layer `layer` over x [time, batch, D] -> (forward, backward) h [time, batch, H]."""
    forward, backward = (getattr(self, f"layer_{layer}_{d}") for d in ("forward", "backward"))
    if forward.impl == "cudnn" and x.shape[0] > 1:
      hs, _ = cudnn.lstm(x, [forward.weights(x), backward.weights(x)], (zeros, zeros),
                         lengths, True)
      return jnp.split(hs, 2, axis=-1)
    # Both directions in one loop: the backward one reads the valid frames reversed.
    parts = [forward.project(x), backward.project(_reverse_valid(x, lengths))]
    projected, w_h, bias = (jnp.stack(p, axis=k) for k, p in zip((1, 0, 0), zip(*parts)))
    _, hs = cells.lstm_scan(projected, w_h, bias, (zeros, zeros))
    return hs[:, 0], _reverse_valid(hs[:, 1], lengths)

  def __call__(self, frames: jax.Array, *, train: bool = False,
               lengths: jax.Array | None = None) -> FrameDistribution:
    """Reads a window both ways.

    Args:
      frames: float32[batch, time, 107] raw frames, right padded.
      train: enables dropout (needs the 'dropout' rng).
      lengths: int32[batch] valid frames per row (at least 1); all `time` when None.

    Returns:
      FrameDistribution with fields [batch, 1, ...]: the frame after the valid frames.
    """
    check_frames(frames, self.cfg)
    return self.heads(self.summary(frames, lengths, train)[:, None, :])

  def decode(self, frame: jax.Array, window: FrameWindow) -> tuple[FrameDistribution, Any]:
    """Pushes a frame into the window and reads it: (distribution [batch, ...], window)."""
    window = push_frame(window, frame)
    lengths = jnp.full((frame.shape[0],), window.length, jnp.int32)
    return self.heads(self.summary(window.frames, lengths)), window

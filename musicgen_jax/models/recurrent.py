"""Recurrent models: a causal RNN/LSTM stack and a bidirectional LSTM over a window."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.encoding import FRAME_DIM
from musicgen_jax.models import ModelConfig, Prediction
from musicgen_jax.models.heads import OutputHeads, compute_dtype, input_features

Carry = Any  # per layer: float[batch, hidden] (rnn) or (c, h) of float[batch, hidden] (lstm)


def _check_frames(frames: jax.Array) -> None:
  if frames.ndim != 3 or frames.shape[-1] != FRAME_DIM:
    raise ValueError(f"frames must be [batch, time, {FRAME_DIM}], got shape {frames.shape}")


def _cell(cfg: ModelConfig, kind: str, name: str) -> nn.RNNCellBase:
  """A SimpleCell (rnn) or OptimizedLSTMCell (lstm); `name` names its parameters."""
  dtype = compute_dtype(cfg)
  if kind == "rnn":
    return nn.SimpleCell(features=cfg.hidden_size, dtype=dtype, name=name)
  return nn.OptimizedLSTMCell(features=cfg.hidden_size, dtype=dtype, name=name)


def zero_carry(cfg: ModelConfig, batch_size: int) -> tuple[Carry, ...]:
  """The initial state of a causal rnn/lstm stack, one entry per layer.

  Each carry keeps the type the cell returns, so a scan's carry has one type:
  the LSTM's (c, h) stay float32 (c = f * c + i * g promotes, which keeps the
  cell state precise over long pieces under bf16 compute); the simple cell's
  state is in the compute dtype.

  Returns:
    rnn: tuple of float[batch, hidden]; lstm: tuple of (c, h), each float32[batch, hidden].
  """
  if cfg.model not in ("rnn", "lstm"):
    raise ValueError(f"zero_carry is for rnn/lstm, got {cfg.model!r}")
  if cfg.model == "rnn":
    zeros = jnp.zeros((batch_size, cfg.hidden_size), compute_dtype(cfg))
    return tuple(zeros for _ in range(cfg.num_layers))
  zeros = jnp.zeros((batch_size, cfg.hidden_size), jnp.float32)
  return tuple((zeros, zeros) for _ in range(cfg.num_layers))


class CausalRecurrent(nn.Module):
  """`num_layers` stacked nn.RNN layers (SimpleCell or OptimizedLSTMCell), then heads.

  Output t predicts frame t + 1 from frames 0..t.

  Attributes:
    cfg: model config; cfg.model is "rnn" or "lstm".
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self,
               frames: jax.Array,
               *,
               train: bool = False,
               lengths: jax.Array | None = None,
               initial_carry: tuple[Carry, ...] | None = None,
               return_carry: bool = False):
    """Runs the stack over a sequence.

    Args:
      frames: float32[batch, time, 107] raw frames.
      train: enables dropout (needs the 'dropout' rng).
      lengths: ignored (the model is causal, so right padding cannot reach valid
        positions); accepted so every model shares one call signature.
      initial_carry: state to start from (see `zero_carry`); zeros when None.
      return_carry: also return the state after the last frame.

    Returns:
      Prediction with fields [batch, time, ...]; with return_carry, (Prediction, carry).
    """
    del lengths
    cfg = self.cfg
    _check_frames(frames)
    if initial_carry is None:
      initial_carry = zero_carry(cfg, frames.shape[0])
    x = input_features(frames).astype(compute_dtype(cfg))
    carries = []
    for layer in range(cfg.num_layers):
      rnn = nn.RNN(_cell(cfg, cfg.model, f"layer_{layer}"))
      carry, x = rnn(x, initial_carry=initial_carry[layer], return_carry=True)
      carries.append(carry)
      x = nn.Dropout(rate=cfg.dropout)(x, deterministic=not train)
    prediction = OutputHeads(cfg, name="heads")(x)
    if return_carry:
      return prediction, tuple(carries)
    return prediction


@flax.struct.dataclass
class FrameWindow:
  """The bidirectional LSTM's decoding state: the last seq_len frames seen.

  frames: float32[batch, seq_len, 107], the valid frames first (right padded).
  length: int32[] how many leading frames are valid (0..seq_len).
  """

  frames: jax.Array
  length: jax.Array


def empty_window(cfg: ModelConfig, batch_size: int) -> FrameWindow:
  """A window with no valid frames yet."""
  return FrameWindow(
      frames=jnp.zeros((batch_size, cfg.seq_len, FRAME_DIM), jnp.float32),
      length=jnp.zeros((), jnp.int32))


def push_frame(window: FrameWindow, frame: jax.Array) -> FrameWindow:
  """Appends a frame, dropping the oldest once the window is full.

  Args:
    window: the current window.
    frame: float32[batch, 107].

  Returns:
    The updated window; shapes unchanged, so this runs inside lax.scan.
  """
  capacity = window.frames.shape[1]
  frame = frame.astype(jnp.float32)[:, None, :]
  slot = jnp.minimum(window.length, capacity - 1)
  appended = jax.lax.dynamic_update_slice(window.frames, frame, (0, slot, 0))
  shifted = jnp.concatenate([window.frames[:, 1:], frame], axis=1)
  frames = jnp.where(window.length < capacity, appended, shifted)
  return FrameWindow(frames=frames, length=jnp.minimum(window.length + 1, capacity))


class BidirectionalLSTM(nn.Module):
  """Stacked nn.Bidirectional LSTMs reading a window; predicts the frame after it.

  The last layer's final forward state (after the last valid frame) and final
  backward state (after reading back to the first frame) are concatenated and
  fed to the heads.

  Attributes:
    cfg: model config; cfg.model is "bilstm".
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self,
               frames: jax.Array,
               *,
               train: bool = False,
               lengths: jax.Array | None = None) -> Prediction:
    """Reads a window both ways.

    Args:
      frames: float32[batch, time, 107] raw frames, right padded.
      train: enables dropout (needs the 'dropout' rng).
      lengths: int32[batch] valid frames per row (at least 1); all `time` when None.

    Returns:
      Prediction with fields [batch, 1, ...]: the frame after the valid frames.
    """
    cfg = self.cfg
    _check_frames(frames)
    batch_size = frames.shape[0]
    dtype = compute_dtype(cfg)
    if lengths is not None:
      lengths = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (batch_size,))
    zeros = jnp.zeros((batch_size, cfg.hidden_size), jnp.float32)  # as zero_carry's LSTM state
    x = input_features(frames).astype(dtype)
    carry = None
    for layer in range(cfg.num_layers):
      bidirectional = nn.Bidirectional(
          nn.RNN(_cell(cfg, "lstm", f"layer_{layer}_forward")),
          nn.RNN(_cell(cfg, "lstm", f"layer_{layer}_backward")))
      carry, x = bidirectional(
          x,
          initial_carry=((zeros, zeros), (zeros, zeros)),
          seq_lengths=lengths,
          return_carry=True)
      if layer + 1 < cfg.num_layers:
        x = nn.Dropout(rate=cfg.dropout)(x, deterministic=not train)
    (_, forward_h), (_, backward_h) = carry
    summary = jnp.concatenate([forward_h, backward_h], axis=-1)
    summary = nn.Dropout(rate=cfg.dropout)(summary, deterministic=not train)
    prediction = OutputHeads(cfg, name="heads")(summary[:, None, :])
    return prediction

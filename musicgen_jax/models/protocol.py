"""What every model answers for itself, so that no caller asks which model it holds.

A model module (see `registry`) is a flax.linen Module with

  __call__(frames [batch, time, F], *, train, lengths) -> FrameDistribution
  decode(frame [batch, F], carry) -> (FrameDistribution [batch], carry)

and the class-level answers

  causal          output t predicts frame t + 1 (else: the frame after the window);
  carries_state   __call__ also takes and returns a `carry` (the state over a piece);
  context(cfg)    how much of the past a prediction sees: the `Context` below;
  train_window(cfg)        frames predicted per training window by default;
  init_carry(cfg, batch)   the decoding state before any frame.

The evaluator scores each model by its `Context`, the sampler drives `decode`, and the
trainer carries state across windows where `carries_state` says it can.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp

from musicgen_jax.encoding import FRAME_DIM

STATE = "state"  # a recurrent state over the whole piece
FIELD = "field"  # a finite receptive field: `frames` frames up to and including the input
WINDOW = "window"  # reads the `frames` frames before the target afresh (bidirectional)
CONTEXT_KINDS = (STATE, FIELD, WINDOW)


@dataclasses.dataclass(frozen=True)
class Context:
  """How much of the past one prediction depends on.

  kind: STATE, FIELD or WINDOW. frames: the receptive field (FIELD) or the window
  (WINDOW) in frames; None for STATE.
  """

  kind: str
  frames: int | None = None

  def __post_init__(self):
    if self.kind not in CONTEXT_KINDS:
      raise ValueError(f"unknown context kind {self.kind!r}")
    if (self.kind == STATE) != (self.frames is None):
      raise ValueError("a STATE context has no length; FIELD and WINDOW need one")


@flax.struct.dataclass
class FrameWindow:
  """A windowed model's decoding state: the last frames seen.

  frames: float32[batch, capacity, F], the valid frames first (right padded).
  length: int32[] how many leading frames are valid (0..capacity).
  """

  frames: jax.Array
  length: jax.Array


def empty_window(capacity: int, batch_size: int, width: int = FRAME_DIM) -> FrameWindow:
  """A window with no valid frames yet (of `width` features: 107, or 108 with velocity)."""
  return FrameWindow(frames=jnp.zeros((batch_size, capacity, width), jnp.float32),
                     length=jnp.zeros((), jnp.int32))


def push_frame(window: FrameWindow, frame: jax.Array) -> FrameWindow:
  """Appends frame float32[batch, 107], dropping the oldest once full; shapes unchanged."""
  capacity = window.frames.shape[1]
  frame = frame.astype(jnp.float32)[:, None, :]
  slot = jnp.minimum(window.length, capacity - 1)
  appended = jax.lax.dynamic_update_slice(window.frames, frame, (0, slot, 0))
  shifted = jnp.concatenate([window.frames[:, 1:], frame], axis=1)
  frames = jnp.where(window.length < capacity, appended, shifted)
  return FrameWindow(frames=frames, length=jnp.minimum(window.length + 1, capacity))

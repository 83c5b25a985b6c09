"""The one entry point to every model: build, initialise, apply, decode step by step.

Training, evaluation and the sampler call only these functions, so a model is
defined once and rebuilt from its ModelConfig alone.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.encoding import FRAME_DIM
from musicgen_jax.models import ModelConfig, Prediction
from musicgen_jax.models.recurrent import (BidirectionalLSTM, CausalRecurrent, FrameWindow,
                                           empty_window, push_frame, zero_carry)
from musicgen_jax.models.transformer import KVCache, Transformer, empty_cache

Params = Any  # a pytree of float32 arrays
Carry = Any  # rnn/lstm: per-layer states; transformer: KVCache; bilstm: FrameWindow

_MODULES = {
    "rnn": CausalRecurrent,
    "lstm": CausalRecurrent,
    "bilstm": BidirectionalLSTM,
    "transformer": Transformer,
}


def build_model(cfg: ModelConfig) -> nn.Module:
  """The flax.linen Module for cfg.model."""
  return _MODULES[cfg.model](cfg)


def is_causal(cfg: ModelConfig) -> bool:
  """True when output t predicts frame t + 1 (rnn, lstm, transformer).

  False for bilstm, which predicts the one frame after its whole window.
  """
  return cfg.model != "bilstm"


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
  """Fresh float32 parameters (cfg.dtype is only the compute dtype).

  Args:
    cfg: the model config.
    rng: a PRNG key.

  Returns:
    The 'params' collection, ready for `apply_model`.
  """
  return _init_fn(cfg)(rng)["params"]


@functools.lru_cache(maxsize=None)
def _init_fn(cfg: ModelConfig):
  """One compiled initialiser per config, shared by every caller in the process."""
  model = build_model(cfg)
  frames = np.zeros((1, 2, FRAME_DIM), np.float32)  # numpy: nothing traced is captured
  return jax.jit(lambda key: model.init({"params": key}, frames))


def apply_model(cfg: ModelConfig,
                params: Params,
                frames: jax.Array,
                *,
                train: bool = False,
                rng: jax.Array | None = None,
                lengths: jax.Array | None = None) -> Prediction:
  """Predicts next frames.

  Args:
    cfg: the model config.
    params: from `init_params` (or training).
    frames: float32[batch, time, 107] raw frames.
    train: enables dropout; then `rng` is needed when cfg.dropout > 0.
    rng: PRNG key for dropout.
    lengths: int32[batch] valid frames per row (right padded); bilstm only,
      ignored by causal models.

  Returns:
    Prediction, float32 fields. Causal models: [batch, time, ...], output t
    predicting frame t + 1. bilstm: [batch, 1, ...], the frame after the window.
  """
  if frames.ndim != 3 or frames.shape[-1] != FRAME_DIM:
    raise ValueError(f"frames must be [batch, time, {FRAME_DIM}], got shape {frames.shape}")
  rngs = {}
  if train and cfg.dropout > 0:
    if rng is None:
      raise ValueError("apply_model(train=True) with dropout needs rng")
    rngs["dropout"] = rng
  return build_model(cfg).apply({"params": params}, frames, train=train, lengths=lengths,
                                rngs=rngs)


def init_carry(cfg: ModelConfig, batch_size: int) -> Carry:
  """The decoding state before any frame has been fed.

  rnn/lstm: the zero recurrent state per layer. transformer: a KVCache of
  cfg.seq_len slots per layer and position 0. bilstm: an empty FrameWindow of
  cfg.seq_len frames.
  """
  if cfg.model in ("rnn", "lstm"):
    return zero_carry(cfg, batch_size)
  if cfg.model == "transformer":
    return empty_cache(cfg, batch_size)
  return empty_window(cfg, batch_size)


def decode_step(cfg: ModelConfig, params: Params, frame: jax.Array,
                carry: Carry) -> tuple[Prediction, Carry]:
  """Feeds one frame and predicts the next; jit-able and usable in lax.scan.

  After feeding frames 0..p, the prediction equals `apply_model` on the whole
  sequence at output p (causal models; the transformer within its banded
  context), or `apply_model` on the last cfg.seq_len frames with their valid
  length (bilstm).

  Args:
    cfg: the model config.
    params: model parameters.
    frame: float32[batch, 107].
    carry: from `init_carry` or the previous step.

  Returns:
    Prediction with fields [batch, ...] and the new carry (same shapes).
  """
  if frame.ndim != 2 or frame.shape[-1] != FRAME_DIM:
    raise ValueError(f"frame must be [batch, {FRAME_DIM}], got shape {frame.shape}")
  model = build_model(cfg)
  variables = {"params": params}
  if cfg.model in ("rnn", "lstm"):
    prediction, carry = model.apply(variables, frame[:, None, :], initial_carry=carry,
                                    return_carry=True)
  elif cfg.model == "transformer":
    return model.apply(variables, frame, carry, method=Transformer.decode)
  else:
    carry = push_frame(carry, frame)
    lengths = jnp.full((frame.shape[0],), carry.length, jnp.int32)
    prediction = model.apply(variables, carry.frames, lengths=lengths)
  return jax.tree.map(lambda a: a[:, 0], prediction), carry


__all__ = [
    "FrameWindow", "KVCache", "apply_model", "build_model", "decode_step", "init_carry",
    "init_params", "is_causal"
]

"""The one entry point to every model: build, initialise, apply, decode step by step.

`MODULES` is the only place where a model's name means something; everything else asks
the module (see `protocol`). Training, evaluation and the sampler call only these
functions, so a model is defined once and rebuilt from its ModelConfig alone.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from musicgen_jax.models.config import MODELS, ModelConfig
from musicgen_jax.models.distributions import FrameDistribution
from musicgen_jax.models.heads import check_frames, frame_width
from musicgen_jax.models.protocol import Context
from musicgen_jax.models.recurrent import LSTM, BidirectionalLSTM, ElmanRNN
from musicgen_jax.models.transformer import Transformer

Params = Any  # a pytree of float32 arrays
Carry = Any  # whatever the model's init_carry returns

MODULES = {
    "rnn": ElmanRNN,
    "lstm": LSTM,
    "bilstm": BidirectionalLSTM,
    "transformer": Transformer,
}
assert set(MODULES) == set(MODELS), "every model name needs a module"


def module_class(cfg: ModelConfig) -> type[nn.Module]:
  return MODULES[cfg.model]


def check_config(cfg: ModelConfig) -> None:
  """Raises ValueError (naming the flag) for a config this model cannot be built with."""
  check = getattr(module_class(cfg), "check_config", None)
  if check is not None:
    check(cfg)


def build_model(cfg: ModelConfig) -> nn.Module:
  """The flax.linen Module for cfg."""
  check_config(cfg)
  return module_class(cfg)(cfg)


def is_causal(cfg: ModelConfig) -> bool:
  """True when output t predicts frame t + 1; False when one prediction follows a window."""
  return module_class(cfg).causal


def carries_state(cfg: ModelConfig) -> bool:
  """True when the model takes and returns a state over a piece (`apply_model(carry=...)`)."""
  return module_class(cfg).carries_state


def context(cfg: ModelConfig) -> Context:
  """How much of the past one prediction depends on (see protocol.Context)."""
  return module_class(cfg).context(cfg)


def default_train_window(cfg: ModelConfig) -> int:
  """Frames predicted per training window when --train_window does not say."""
  return module_class(cfg).train_window(cfg)


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
  """Fresh float32 parameters (cfg.dtype is only the compute dtype): the 'params' collection."""
  return _init_fn(cfg)(rng)["params"]


@functools.lru_cache(maxsize=None)
def _init_fn(cfg: ModelConfig):
  """One compiled initialiser per config, shared by every caller in the process."""
  model = build_model(cfg)
  frames = np.zeros((1, 2, frame_width(cfg)), np.float32)  # numpy: nothing traced is captured
  return jax.jit(lambda key: model.init({"params": key}, frames))


def apply_model(cfg: ModelConfig, params: Params, frames: jax.Array, *, train: bool = False,
                rng: jax.Array | None = None, lengths: jax.Array | None = None,
                carry: Carry | None = None):
  """Predicts next frames.

  Args:
    cfg: the model config.
    params: from `init_params` (or training).
    frames: float32[batch, time, 107] raw frames.
    train: enables dropout; then `rng` is needed when cfg.dropout > 0.
    rng: PRNG key for dropout.
    lengths: int32[batch] valid frames per row (right padded); read by windowed models.
    carry: only for models that carry state: start from it, and also return the state
      after the last frame.

  Returns:
    FrameDistribution (causal models: fields [batch, time, ...], output t predicting
    frame t + 1; otherwise [batch, 1, ...], the frame after the window); with `carry`,
    (FrameDistribution, carry).
  """
  check_frames(frames, cfg)
  rngs = {}
  if train and cfg.dropout > 0:
    if rng is None:
      raise ValueError("apply_model(train=True) with dropout needs rng")
    rngs["dropout"] = rng
  kwargs = {"train": train, "lengths": lengths}
  if carry is not None:
    kwargs.update(carry=carry, return_carry=True)
  return build_model(cfg).apply({"params": params}, frames, rngs=rngs, **kwargs)


def init_carry(cfg: ModelConfig, batch_size: int) -> Carry:
  """The decoding state before any frame has been fed (recurrent state, KV cache, window)."""
  return module_class(cfg).init_carry(cfg, batch_size)


def decode_step(cfg: ModelConfig, params: Params, frame: jax.Array,
                carry: Carry) -> tuple[FrameDistribution, Carry]:
  """Feeds one frame float32[batch, 107] and predicts the next; usable in lax.scan.

  After feeding frames 0..p, the prediction equals `apply_model` on the whole sequence
  at output p (causal models), or on the last cfg.seq_len frames (windowed models).

  Returns:
    FrameDistribution with fields [batch, ...] and the new carry (same shapes).
  """
  check_frames(frame, cfg, ndim=2)
  model = build_model(cfg)
  return model.apply({"params": params}, frame, carry, method=model.decode)


__all__ = [
    "MODULES", "Carry", "Params", "apply_model", "build_model", "carries_state", "check_config",
    "context", "decode_step", "default_train_window", "init_carry", "init_params", "is_causal", "module_class",
]

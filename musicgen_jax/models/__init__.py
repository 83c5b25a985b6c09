"""Model configuration shared by every architecture (the registry lives beside it)."""

import dataclasses

import flax
import jax

MODELS = ("rnn", "lstm", "bilstm", "transformer")
DURATION_HEADS = ("categorical", "regression")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to rebuild a model; saved in `W/config.json`."""

  model: str = "lstm"  # one of MODELS
  hidden_size: int = 64  # the study's size
  num_layers: int = 2  # the study's depth
  num_heads: int = 4  # transformer only
  dropout: float = 0.0
  dtype: str = "float32"  # compute dtype; params stay float32
  duration_head: str = "categorical"  # one of DURATION_HEADS
  steps_per_quarter: int = 12  # duration class k means k / steps_per_quarter quarters
  max_duration_steps: int = 96  # number of duration classes (8 quarters at 12 steps)
  seq_len: int = 48  # training window; transformer context, bilstm input length

  def __post_init__(self):
    if self.model not in MODELS:
      raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
    if self.duration_head not in DURATION_HEADS:
      raise ValueError(
          f"unknown duration_head {self.duration_head!r}; choose one of "
          f"{', '.join(DURATION_HEADS)}")
    if self.seq_len < 2:
      raise ValueError(f"seq_len must be at least 2, got {self.seq_len}")
    for name in ("hidden_size", "num_layers", "num_heads", "steps_per_quarter",
                 "max_duration_steps"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@flax.struct.dataclass
class Prediction:
  """A model's prediction of the next frame.

  note_logits: float32[..., 106], one independent Bernoulli logit per pitch.
  duration: categorical head: float32[..., max_duration_steps] logits, class k
    meaning (k + 1) / steps_per_quarter quarter notes; regression head:
    float32[..., 2], the mean and log standard deviation of log(duration).
  """

  note_logits: jax.Array
  duration: jax.Array


# The registry imports ModelConfig and Prediction from here, so it comes last.
from musicgen_jax.models.registry import (  # noqa: E402  pylint: disable=wrong-import-position
    FrameWindow, KVCache, apply_model, build_model, decode_step, init_carry, init_params,
    is_causal)

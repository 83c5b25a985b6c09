"""What every model shares: the input features it reads and the heads it predicts with.

The stored frame keeps the duration in quarter notes; models read it through
`duration_feature` (defined here once), and predict through `OutputHeads`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, NUM_NOTES
from musicgen_jax.models import ModelConfig, Prediction

REGRESSION_OUTPUTS = 2  # mean and log standard deviation of log(duration)
LOG_STD_BOUND = 5.0  # the regression head's log-std is softly bounded to (-5, 5)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(cfg: ModelConfig) -> jnp.dtype:
  """The dtype a model computes in (its parameters stay float32)."""
  return _DTYPES[cfg.dtype]


def duration_output_size(cfg: ModelConfig) -> int:
  """Last-axis size of `Prediction.duration` for this config."""
  if cfg.duration_head == "categorical":
    return cfg.max_duration_steps
  return REGRESSION_OUTPUTS


def duration_feature(duration: jax.Array) -> jax.Array:
  """The model's input feature for a duration: log1p of quarter notes.

  Args:
    duration: float32[...] durations in quarter notes (negative values read as 0).

  Returns:
    float32[...], 0 for 0, about 0.69 for one quarter, growing slowly for long rests.
  """
  return jnp.log1p(jnp.maximum(duration, 0.0))


def input_features(frames: jax.Array) -> jax.Array:
  """Maps raw frames to the features every model reads.

  Args:
    frames: float32[..., 107] raw frames; frame[..., 106] is the duration in quarters.

  Returns:
    float32[..., 107]: the 106 note indicators unchanged, then `duration_feature`.
  """
  if frames.shape[-1] != FRAME_DIM:
    raise ValueError(f"frames must end in {FRAME_DIM} features, got shape {frames.shape}")
  frames = frames.astype(jnp.float32)
  notes = frames[..., :NUM_NOTES]
  duration = duration_feature(frames[..., DURATION_INDEX])
  return jnp.concatenate([notes, duration[..., None]], axis=-1)


# Initial note logit: p = sigmoid(-4) ~ 1.8%, about two of the 106 pitches per onset, near
# what real music has. Starting at p = 0.5 costs the first hundreds of steps on learning
# that most pitches are silent (the prior-probability initialisation of detection heads).
NOTE_PRIOR_LOGIT = -4.0


class OutputHeads(nn.Module):
  """A Dense to 106 note logits and a Dense to the duration output.

  Attributes:
    cfg: the model config (duration head, class count, compute dtype).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> Prediction:
    """Predicts the next frame.

    Args:
      hidden: float[..., features] the model's last hidden state.

    Returns:
      Prediction with float32 fields: note_logits [..., 106] and duration
      [..., max_duration_steps] (categorical) or [..., 2] (regression).
    """
    dtype = compute_dtype(self.cfg)
    note_logits = nn.Dense(NUM_NOTES, dtype=dtype, name="notes",
                           bias_init=nn.initializers.constant(NOTE_PRIOR_LOGIT))(hidden)
    duration = nn.Dense(duration_output_size(self.cfg), dtype=dtype, name="duration")(hidden)
    note_logits = note_logits.astype(jnp.float32)
    duration = duration.astype(jnp.float32)
    if self.cfg.duration_head == "regression":
      mean, raw_log_std = duration[..., 0], duration[..., 1]
      log_std = LOG_STD_BOUND * jnp.tanh(raw_log_std / LOG_STD_BOUND)
      duration = jnp.stack([mean, log_std], axis=-1)
    return Prediction(note_logits=note_logits, duration=duration)

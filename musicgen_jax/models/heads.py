"""What every model shares: the input features it reads and the head it predicts with.

The stored frame keeps the duration in quarter notes; models read it through
`duration_feature` (defined here once), and turn their hidden state into a
`FrameDistribution` through `FrameHead`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.encoding import NUM_NOTES, FrameLayout, frame_layout
from musicgen_jax.models.config import ModelConfig
from musicgen_jax.models.distributions import (CategoricalDuration, CategoricalVelocity,
                                               FrameDistribution, IndependentNotes,
                                               LogNormalDuration, NadeNotes)

REGRESSION_OUTPUTS = 2  # mean and log standard deviation of log(duration)
LOG_STD_BOUND = 5.0  # the regression head's log-std is softly bounded to (-5, 5)
# Initial note logit: p = sigmoid(-4) ~ 1.8%, about two of the 106 pitches per onset, near
# what real music has. Starting at p = 0.5 costs the first hundreds of steps on learning
# that most pitches are silent (the prior-probability initialisation of detection heads).
NOTE_PRIOR_LOGIT = -4.0
NADE_INIT_STDDEV = 0.01  # small NADE weights: the head starts near the independent prior

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(cfg: ModelConfig) -> jnp.dtype:
  """The dtype a model computes in (its parameters stay float32)."""
  return _DTYPES[cfg.dtype]


def model_layout(cfg: ModelConfig) -> FrameLayout:
  """The frames a model reads and predicts: with a velocity column when velocity_bins > 0."""
  return FrameLayout(velocity=cfg.velocity_bins > 0)


def frame_width(cfg: ModelConfig) -> int:
  """107, or 108 for a model of frames with dynamics (velocity_bins > 0)."""
  return model_layout(cfg).width


def check_frames(frames: jax.Array, cfg: ModelConfig, ndim: int = 3) -> None:
  """Raises unless frames are float[batch, (time,) F] with this model's layout."""
  layout = model_layout(cfg)
  shape = f"[batch, time, {layout.width}]" if ndim == 3 else f"[batch, {layout.width}]"
  if frames.ndim != ndim or frames.shape[-1] != layout.width:
    raise ValueError(f"frames must be {shape} for this model (F = {layout.describe()}), got "
                     f"shape {frames.shape}")


def duration_feature(duration: jax.Array) -> jax.Array:
  """The model's input feature for a duration: log1p of quarter notes.

  Args:
    duration: float32[...] durations in quarter notes (negative values read as 0).

  Returns:
    float32[...], 0 for 0, about 0.69 for one quarter, growing slowly for long rests.
  """
  return jnp.log1p(jnp.maximum(duration, 0.0))


def input_features(frames: jax.Array) -> jax.Array:
  """Maps raw frames float32[..., 107] (or 108, with velocity) to the features models read.

  Returns:
    float32[..., 107]: the 106 note indicators unchanged, then `duration_feature`; with
    velocity one more, the velocity / 127.
  """
  layout = frame_layout(frames.shape, dims=None)
  frames = frames.astype(jnp.float32)
  parts = [frames[..., layout.notes],
           duration_feature(frames[..., layout.duration_index])[..., None]]
  if layout.velocity:
    parts.append(frames[..., layout.velocity_index, None] / 127.0)
  return jnp.concatenate(parts, axis=-1)


class FrameHead(nn.Module):
  """The model's hidden state -> a FrameDistribution over the next frame.

  A Dense to 106 note logits (the NADE's visible bias with `note_head='nade'`, which adds
  a Dense to the NADE's hidden bias and its weights `nade_w_in`, `nade_w_out`), and a Dense
  to the duration output (classes, or the regression's mean and log-std).

  Attributes:
    cfg: the model config (heads, class count, compute dtype).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> FrameDistribution:
    """hidden: float[..., features] -> FrameDistribution with float32 fields [..., ...]."""
    cfg = self.cfg
    dtype = compute_dtype(cfg)
    dense = lambda size, name, **kw: nn.Dense(size, dtype=dtype, name=name, **kw)(hidden)
    note_logits = dense(NUM_NOTES, "notes",
                        bias_init=nn.initializers.constant(NOTE_PRIOR_LOGIT)).astype(jnp.float32)
    if cfg.note_head == "nade":
      init = nn.initializers.normal(NADE_INIT_STDDEV)
      notes = NadeNotes(
          visible_bias=note_logits,
          hidden_bias=dense(cfg.nade_hidden, "nade_hidden").astype(jnp.float32),
          w_in=self.param("nade_w_in", init, (NUM_NOTES, cfg.nade_hidden)),
          w_out=self.param("nade_w_out", init, (cfg.nade_hidden, NUM_NOTES)))
    else:
      notes = IndependentNotes(logits=note_logits)
    if cfg.duration_head == "categorical":
      duration = CategoricalDuration(
          logits=dense(cfg.max_duration_steps, "duration").astype(jnp.float32),
          steps_per_quarter=cfg.steps_per_quarter)
    else:
      raw = dense(REGRESSION_OUTPUTS, "duration").astype(jnp.float32)
      log_std = LOG_STD_BOUND * jnp.tanh(raw[..., 1] / LOG_STD_BOUND)
      duration = LogNormalDuration(mean_log_std=jnp.stack([raw[..., 0], log_std], axis=-1),
                                   steps_per_quarter=cfg.steps_per_quarter,
                                   max_steps=cfg.max_duration_steps)
    velocity = None
    if cfg.velocity_bins:
      velocity = CategoricalVelocity(dense(cfg.velocity_bins, "velocity").astype(jnp.float32))
    return FrameDistribution(notes=notes, duration=duration, velocity=velocity)

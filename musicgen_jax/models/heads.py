"""What every model shares: the input features it reads and the head it predicts with.

The stored frame keeps the duration in quarter notes; models read it through
`duration_feature` (defined here once), and turn their hidden state into a
`FrameDistribution` through `FrameHead`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.encoding import NUM_NOTES, FrameLayout, frame_layout, next_bar_step
from musicgen_jax.models.config import ModelConfig
from musicgen_jax.models.distributions import (CategoricalDuration, CategoricalVelocity,
                                               FrameDistribution, IndependentNotes,
                                               LengthHead, LogNormalDuration, NadeNotes)

REGRESSION_OUTPUTS = 2  # mean and log standard deviation of log(duration)
LOG_STD_BOUND = 5.0  # the regression head's log-std is softly bounded to (-5, 5)
# Initial note logit: p = sigmoid(-4) ~ 1.8%, about two of the 106 pitches per onset, near
# what real music has. Starting at p = 0.5 costs the first hundreds of steps on learning
# that most pitches are silent (the prior-probability initialisation of detection heads).
NOTE_PRIOR_LOGIT = -4.0
NADE_INIT_STDDEV = 0.01  # small NADE weights: the head starts near the independent prior
LENGTH_PITCH_STDDEV = 0.1  # the pitch's part of a note length's hidden pre-activation
BAR_QUARTERS = 8  # metre features: the quarter of the bar, one-hot, the 8th and later as one

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(cfg: ModelConfig) -> jnp.dtype:
  """The dtype a model computes in (its parameters stay float32)."""
  return _DTYPES[cfg.dtype]


def model_layout(cfg: ModelConfig) -> FrameLayout:
  """The frames a model reads and predicts: a velocity column when velocity_bins > 0, note
  lengths and metre columns when the data has them."""
  return FrameLayout(velocity=cfg.velocity_bins > 0, lengths=cfg.note_lengths,
                     metre=cfg.metre)


def frame_width(cfg: ModelConfig) -> int:
  """The width of the model's frames: 107 for the study's, more with each part."""
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


def metre_features(frames: jax.Array, layout: FrameLayout, steps_per_quarter: int) -> jax.Array:
  """float32[..., steps_per_quarter + BAR_QUARTERS + 1]: where the predicted frame (the one
  after this one) starts in its bar: the grid step within its quarter and the quarter of
  the bar, one-hot, and the bar's length / 4 quarters."""
  bar = frames[..., layout.metre_columns.start + 1]
  step = next_bar_step(frames, layout, steps_per_quarter, xp=jnp)
  within = jax.nn.one_hot(jnp.mod(step, steps_per_quarter), steps_per_quarter)
  quarter = jax.nn.one_hot(jnp.minimum(step // steps_per_quarter, BAR_QUARTERS - 1),
                           BAR_QUARTERS)
  return jnp.concatenate([within, quarter, (bar / 4.0)[..., None]], axis=-1)


def input_features(frames: jax.Array, steps_per_quarter: int = 12) -> jax.Array:
  """Maps raw frames float32[..., F] (see `FrameLayout`) to the features models read.

  Returns:
    float32[..., G]: the 106 note indicators unchanged, then `duration_feature`; with
    velocity, the velocity / 127; with note lengths, `duration_feature` of each note's
    length (0 where none starts); with metre, `metre_features`.
  """
  layout = frame_layout(frames.shape, dims=None)
  frames = frames.astype(jnp.float32)
  parts = [frames[..., layout.notes],
           duration_feature(frames[..., layout.duration_index])[..., None]]
  if layout.velocity:
    parts.append(frames[..., layout.velocity_index, None] / 127.0)
  if layout.lengths:
    parts.append(duration_feature(frames[..., layout.length_columns]))
  if layout.metre:
    parts.append(metre_features(frames, layout, steps_per_quarter))
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
    nade = cfg.note_head == "nade"
    lengths = self._lengths(dense, nade) if cfg.note_lengths else None
    if nade:
      init = nn.initializers.normal(NADE_INIT_STDDEV)
      notes = NadeNotes(
          visible_bias=note_logits,
          hidden_bias=dense(cfg.nade_hidden, "nade_hidden").astype(jnp.float32),
          w_in=self.param("nade_w_in", init, (NUM_NOTES, cfg.nade_hidden)),
          w_out=self.param("nade_w_out", init, (cfg.nade_hidden, NUM_NOTES)),
          lengths=lengths)
    else:
      notes = IndependentNotes(logits=note_logits, lengths=lengths)
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

  def _lengths(self, dense, nade: bool) -> LengthHead:
    """The note lengths' head: with the nade, its hidden state is the NADE's."""
    cfg = self.cfg
    classes, hidden = cfg.max_length_steps, cfg.nade_hidden
    return LengthHead(
        bias=dense(classes, "length").astype(jnp.float32),
        w_pitch=self.param("length_w_pitch", nn.initializers.normal(LENGTH_PITCH_STDDEV),
                           (NUM_NOTES, hidden)),
        w_out=self.param("length_w_out", nn.initializers.lecun_normal(), (hidden, classes)),
        pitch_bias=self.param("length_pitch_bias", nn.initializers.zeros, (NUM_NOTES, classes)),
        hidden_bias=None if nade else dense(hidden, "length_hidden").astype(jnp.float32),
        w_len_in=(self.param("length_w_in", nn.initializers.normal(NADE_INIT_STDDEV),
                             (classes, hidden)) if nade else None),
        steps_per_quarter=cfg.steps_per_quarter)

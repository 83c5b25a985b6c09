"""The one loss: note BCE plus duration NLL, in nats per predicted frame.

Every model, the trainer and the evaluator use these functions. Metrics are
returned as sums with a `count`; hosts divide.
"""

import math

import jax
import jax.numpy as jnp
import optax

from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, NUM_NOTES
from musicgen_jax.models import ModelConfig, Prediction

METRIC_NAMES = ("nll", "nll_notes", "nll_duration", "tp", "fp", "fn")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def duration_class(duration: jax.Array, cfg: ModelConfig) -> jax.Array:
  """Categorical duration class: class k means (k + 1) / steps_per_quarter quarters.

  Args:
    duration: float[...] durations in quarter notes.
    cfg: supplies steps_per_quarter and max_duration_steps.

  Returns:
    int32[...] clip(round(duration * steps_per_quarter), 1, max_duration_steps) - 1;
    longer durations fall in the last class, shorter ones in the first.
  """
  steps = jnp.round(jnp.asarray(duration, jnp.float32) * cfg.steps_per_quarter)
  return (jnp.clip(steps, 1, cfg.max_duration_steps) - 1).astype(jnp.int32)


def regression_target(duration: jax.Array, cfg: ModelConfig) -> jax.Array:
  """What the regression head models: log(duration), floored at one grid step.

  The floor keeps padding (duration 0) finite; real frames last at least one step.
  """
  floor = 1.0 / cfg.steps_per_quarter
  return jnp.log(jnp.maximum(jnp.asarray(duration, jnp.float32), floor))


def frame_terms(pred: Prediction, targets: jax.Array, cfg: ModelConfig) -> dict[str, jax.Array]:
  """Per-frame loss terms and note counts.

  Args:
    pred: Prediction with note_logits float[..., 106] and duration float[..., C].
    targets: float32[..., 107] the frames predicted (notes 0/1, duration in quarters).
    cfg: the model config (duration head, classes).

  Returns:
    dict of float32[...]: 'nll_notes' (sum over the 106 notes of binary cross
    entropy, nats), 'nll_duration' (categorical: -log p(target class); regression:
    Gaussian NLL of log(duration), a density so it may be negative), 'nll'
    (their sum), and 'tp', 'fp', 'fn' note counts with a note predicted when its
    probability exceeds 0.5 (logit > 0).
  """
  if targets.shape[-1] != FRAME_DIM:
    raise ValueError(f"targets must end in {FRAME_DIM} features, got shape {targets.shape}")
  targets = targets.astype(jnp.float32)
  logits = pred.note_logits.astype(jnp.float32)
  duration_out = pred.duration.astype(jnp.float32)
  notes = targets[..., :NUM_NOTES]
  duration = targets[..., DURATION_INDEX]

  nll_notes = optax.sigmoid_binary_cross_entropy(logits, notes).sum(axis=-1)
  if cfg.duration_head == "categorical":
    log_probs = jax.nn.log_softmax(duration_out, axis=-1)
    target_class = duration_class(duration, cfg)
    nll_duration = -jnp.take_along_axis(log_probs, target_class[..., None], axis=-1)[..., 0]
  else:
    mean, log_std = duration_out[..., 0], duration_out[..., 1]
    z = (regression_target(duration, cfg) - mean) * jnp.exp(-log_std)
    nll_duration = 0.5 * jnp.square(z) + log_std + _HALF_LOG_2PI

  predicted = logits > 0.0
  actual = notes > 0.5
  count = lambda a: a.astype(jnp.float32).sum(axis=-1)
  return {
      "nll": nll_notes + nll_duration,
      "nll_notes": nll_notes,
      "nll_duration": nll_duration,
      "tp": count(predicted & actual),
      "fp": count(predicted & ~actual),
      "fn": count(~predicted & actual),
  }


def loss_and_metrics(pred: Prediction, targets: jax.Array, mask: jax.Array,
                     cfg: ModelConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mask-weighted mean NLL per frame, and metric sums.

  Args:
    pred: Prediction with fields [..., C].
    targets: float32[..., 107].
    mask: float32[...] weight per predicted frame (0 for padding).
    cfg: the model config.

  Returns:
    loss: float32[] sum(mask * nll) / max(sum(mask), tiny).
    metrics: float32[] sums of mask * term for 'nll', 'nll_notes', 'nll_duration',
      'tp', 'fp', 'fn', and 'count' = sum(mask). Masked-out frames contribute
      exactly 0, even where their terms are not finite.
  """
  terms = frame_terms(pred, targets, cfg)
  mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), terms["nll"].shape)
  active = mask > 0
  metrics = {
      name: jnp.sum(jnp.where(active, terms[name] * mask, 0.0)) for name in METRIC_NAMES
  }
  metrics["count"] = jnp.sum(mask)
  loss = metrics["nll"] / jnp.maximum(metrics["count"], jnp.finfo(jnp.float32).tiny)
  return loss, metrics

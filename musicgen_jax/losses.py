"""The one loss: note NLL plus duration NLL, in nats per predicted frame.

Every model, the trainer and the evaluator use these functions; the prediction (a
`FrameDistribution`) scores itself, so the same code serves every head. Metrics are
returned as sums with a `count`; hosts divide.
"""

import jax
import jax.numpy as jnp
import optax

from musicgen_jax.encoding import (DURATION_INDEX, NUM_NOTES, PIANO_KEYS, VELOCITY_INDEX,
                                   frame_layout)
from musicgen_jax.models import FrameDistribution

METRIC_NAMES = ("nll", "nll_notes", "nll_notes_88", "nll_duration", "nll_velocity",
                "nll_length", "nll_total", "tp", "fp", "fn")


@jax.custom_vjp
def note_cross_entropy(logits: jax.Array, notes: jax.Array) -> jax.Array:
  """Elementwise binary cross-entropy of logits for 0/1 targets (optax's formula), with its
  gradient written out, sigmoid(logits) - notes: differentiating the formula instead costs a
  second softplus pass over every [frame, pitch]. The notes are data: no gradient reaches
  them."""
  return optax.sigmoid_binary_cross_entropy(logits, notes)


def _note_ce_fwd(logits, notes):
  return note_cross_entropy(logits, notes), (logits, notes)


def _note_ce_bwd(residuals, g):
  logits, notes = residuals
  return g * (jax.nn.sigmoid(logits) - notes), jnp.zeros_like(notes)


note_cross_entropy.defvjp(_note_ce_fwd, _note_ce_bwd)


def frame_terms(pred: FrameDistribution, targets: jax.Array) -> dict[str, jax.Array]:
  """Per-frame loss terms and note counts.

  Args:
    pred: the predicted distribution, fields [..., ...].
    targets: float32[..., F] the frames predicted (notes 0/1, duration in quarters, and the
      other parts of `encoding.FrameLayout`; metre columns are read by no loss).

  Returns:
    dict of float32[...]: 'nll_notes' (the sum over the 106 pitches of the binary cross
    entropy of each pitch's conditional probability: the exact -log p(notes) for either
    note head), 'nll_notes_88' (the terms of the 88 piano keys, pitches 21..108: the
    NLL the polyphonic-music benchmarks report; with either head the first 88 terms are
    exactly an 88-pitch model's), 'nll_duration' (categorical: -log p(target class);
    regression: Gaussian NLL of log(duration), a density so it may be negative), 'nll'
    (notes plus duration: comparable with and without dynamics), 'nll_velocity' (frames
    with dynamics: -log p(velocity class) of each onset; 0 otherwise), 'nll_length' (frames
    with note lengths: the sum over the frame's notes of -log p(length class | the notes,
    and for the nade head the lengths below it); 0 otherwise), 'nll_total' (nll plus
    nll_velocity plus nll_length, what training minimises), and 'tp',
    'fp', 'fn' note counts with a note predicted when its conditional probability exceeds
    0.5 (for the nade head, given the true pitches below it).
  """
  layout = frame_layout(targets.shape, "targets", dims=None)
  targets = targets.astype(jnp.float32)
  notes = targets[..., :NUM_NOTES]
  if pred.notes.lengths is not None and not layout.lengths:
    raise ValueError(f"a model of note lengths needs targets with them, got {layout.describe()}")
  quarters = targets[..., layout.length_columns] if pred.notes.lengths is not None else None
  logits, nll_length = pred.notes.scores(notes, quarters)
  logits = logits.astype(jnp.float32)
  per_pitch = note_cross_entropy(logits, notes)
  nll_notes = per_pitch.sum(axis=-1)
  nll_duration = pred.duration.nll(targets[..., DURATION_INDEX])
  nll_velocity = jnp.zeros_like(nll_duration)
  if nll_length is None:
    nll_length = jnp.zeros_like(nll_duration)
  if pred.velocity is not None:
    nll_velocity = pred.velocity.nll(targets[..., VELOCITY_INDEX])
  predicted = logits > 0.0
  actual = notes > 0.5
  count = lambda a: a.astype(jnp.float32).sum(axis=-1)
  return {
      "nll": nll_notes + nll_duration,
      "nll_notes": nll_notes,
      "nll_notes_88": per_pitch[..., :PIANO_KEYS].sum(axis=-1),
      "nll_duration": nll_duration,
      "nll_velocity": nll_velocity,
      "nll_length": nll_length,
      "nll_total": nll_notes + nll_duration + nll_velocity + nll_length,
      "tp": count(predicted & actual),
      "fp": count(predicted & ~actual),
      "fn": count(~predicted & actual),
  }


def loss_and_metrics(pred: FrameDistribution, targets: jax.Array,
                     mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mask-weighted mean NLL per frame, and metric sums.

  Args:
    pred: the predicted distribution, fields [..., ...].
    targets: float32[..., F] (the model's `FrameLayout`).
    mask: float32[...] weight per predicted frame (0 for padding).

  Returns:
    loss: float32[] sum(mask * nll_total) / max(sum(mask), tiny).
    metrics: float32[] sums of mask * term for each of METRIC_NAMES, and 'count' =
      sum(mask). Masked-out frames contribute
      exactly 0, even where their terms are not finite.
  """
  terms = frame_terms(pred, targets)
  mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), terms["nll"].shape)
  active = mask > 0
  metrics = {
      name: jnp.sum(jnp.where(active, terms[name] * mask, 0.0)) for name in METRIC_NAMES
  }
  metrics["count"] = jnp.sum(mask)
  loss = metrics["nll_total"] / jnp.maximum(metrics["count"], jnp.finfo(jnp.float32).tiny)
  return loss, metrics

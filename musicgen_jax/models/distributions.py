"""What a model predicts: a distribution over the next frame that scores and samples itself.

A model's output is a `FrameDistribution` (alias `Prediction`) made of one distribution
per part of the frame:

  notes     `IndependentNotes` (a Bernoulli per pitch, the study's head) or `NadeNotes`
            (pitch by pitch from the lowest, each given the pitches below it), with a
            `LengthHead` for each note's length in frames with note lengths;
  duration  `CategoricalDuration` (classes of grid steps) or `LogNormalDuration` (the
            study's regression);

Each has `conditional_logits` / `nll` for training and evaluation (the exact likelihood,
every pitch in one pass) and `sample` for generation, so the loss and the sampler never
ask which head (or which model) they hold. Fields carry any leading batch/time axes; the
NADE weights have none.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.encoding import NUM_NOTES, duration_classes, quarters_of_class

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Hidden states the NADE likelihood computes per frame (notes + 1) before it falls back to
# one per pitch; real frames have at most ~10 onsets (piano) or 4 (chorales).
NADE_SEGMENTS = 16
LENGTH_STREAM = 3  # fold_in index of the note lengths' randomness in a frame's key


def _allowed_or_all(allowed: jax.Array | None) -> jax.Array:
  return jnp.ones((NUM_NOTES,), bool) if allowed is None else jnp.asarray(allowed, bool)


def first_argmax(x: jax.Array) -> jax.Array:
  """int32[...]: jnp.argmax(x, axis=-1) (the first largest) of non-NaN x, as a max and a min
  over the last axis: XLA on CPU runs those as vector loops, argmax's (value, index)
  reduction as a scalar one (about 40 us for 64 x 96 duration logits per sampled frame)."""
  index = jnp.arange(x.shape[-1], dtype=jnp.int32)
  top = jnp.max(x, axis=-1, keepdims=True)
  return jnp.min(jnp.where(x == top, index, x.shape[-1] - 1), axis=-1)


def cumsum(x: jax.Array, axis: int = -1) -> jax.Array:
  """jnp.cumsum as a log-depth tree of adds: XLA on CPU runs jnp.cumsum as a windowed
  reduction, each of n outputs summing its own prefix (n^2 / 2 adds: 1 ms per sampled frame
  for 64 x 106 length distributions of 96 classes)."""
  return jax.lax.associative_scan(jnp.add, x, axis=axis)


def _inverse_cdf(logits: jax.Array, uniforms: jax.Array) -> jax.Array:
  """int32[...]: the class whose cumulative probability first exceeds `uniforms` [...]."""
  cdf = cumsum(jax.nn.softmax(logits, axis=-1))
  below = jnp.sum(cdf < uniforms[..., None], axis=-1)
  return jnp.minimum(below, logits.shape[-1] - 1).astype(jnp.int32)


def _fits_segments(notes: jax.Array) -> jax.Array:
  """bool[]: whether every frame has fewer than NADE_SEGMENTS notes, so that the passes over
  the sounding notes only serve the whole batch (else the per-pitch passes do)."""
  return jnp.max(jnp.sum(notes, axis=-1), initial=0.0) < NADE_SEGMENTS


def _sounding_order(notes: jax.Array, most: int) -> tuple[jax.Array, jax.Array]:
  """(int32[..., most] the first `most` sounding pitches in ascending order then 0s, and
  float32[..., most] 1 where a slot holds a sounding pitch).

  Without a sort: each sounding pitch goes to the slot of its rank among them (argsort's
  cost over 106 pitches was 0.4 ms per sampled frame of 64 rows on CPU)."""
  on = notes > 0.5
  rank = cumsum(on.astype(jnp.int32)) - 1
  slots = jnp.arange(most, dtype=jnp.int32)
  placed = on[..., :, None] & (rank[..., :, None] == slots)  # [..., 106, most]
  order = jnp.sum(jnp.where(placed, jnp.arange(NUM_NOTES, dtype=jnp.int32)[:, None], 0),
                  axis=-2)
  count = jnp.sum(on, axis=-1, dtype=jnp.int32)
  return order, (slots < count[..., None]).astype(jnp.float32)


@flax.struct.dataclass
class LengthHead:
  """Each sounding note's length class, given the pitch and a hidden pre-activation.

  Class k means (k + 1) / steps_per_quarter quarter notes (longer lengths are the last
  class). For a note of pitch p whose pre-activation is a (the NADE's state after the
  notes below it and their lengths, or, with the independent head, one per frame):

    logits = sigmoid(a + w_pitch[p]) @ w_out + pitch_bias[p] + bias.

  bias: float32[..., C] from the model's state; w_pitch: float32[106, H];
  w_out: float32[H, C]; pitch_bias: float32[106, C]; hidden_bias: float32[..., H], the
  independent head's pre-activation (None in a NADE); w_len_in: float32[C, H], what a
  drawn length adds to the NADE's state (None with the independent head).
  """

  bias: jax.Array
  w_pitch: jax.Array
  w_out: jax.Array
  pitch_bias: jax.Array
  hidden_bias: jax.Array | None
  w_len_in: jax.Array | None
  steps_per_quarter: int = flax.struct.field(pytree_node=False)

  @property
  def num_classes(self) -> int:
    return self.w_out.shape[-1]

  def classes(self, quarters: jax.Array) -> jax.Array:
    return duration_classes(quarters, self.steps_per_quarter, self.num_classes, xp=jnp)

  def quarters(self, classes: jax.Array) -> jax.Array:
    return jnp.asarray(quarters_of_class(self.steps_per_quarter, self.num_classes))[classes]

  def logits(self, pre: jax.Array, pitches: jax.Array) -> jax.Array:
    """pre float32[..., K, H], pitches int32[..., K] -> float32[..., K, C]."""
    hidden = jax.nn.sigmoid(pre + self.w_pitch[pitches])
    return hidden @ self.w_out + self.pitch_bias[pitches] + self.bias[..., None, :]

  def nll_of(self, logits: jax.Array, classes: jax.Array, on: jax.Array) -> jax.Array:
    """float32[...]: the summed -log p(class) of the notes that are on."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, classes[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(on > 0.5, picked, 0.0), axis=-1)

  def independent_nll(self, notes: jax.Array, quarters: jax.Array) -> jax.Array:
    """float32[...]: -log p(lengths | notes) with one pre-activation per frame."""
    notes = notes.astype(jnp.float32)
    classes = self.classes(quarters)

    def by_segments(notes):
      order, on = _sounding_order(notes, NADE_SEGMENTS - 1)
      pre = jnp.broadcast_to(self.hidden_bias[..., None, :], order.shape + self.w_pitch.shape[1:])
      return self.nll_of(self.logits(pre, order), jnp.take_along_axis(classes, order, -1), on)

    def by_pitch(notes):
      pitches = jnp.broadcast_to(jnp.arange(NUM_NOTES), notes.shape)
      pre = jnp.broadcast_to(self.hidden_bias[..., None, :], notes.shape + self.w_pitch.shape[1:])
      return self.nll_of(self.logits(pre, pitches), classes, notes)

    fits = _fits_segments(notes)
    # by_pitch rematerialised: otherwise differentiating the cond makes every step fill
    # its unused residuals ([..., 106, H] and [..., 106, C] zeros) in the usual case.
    return jax.lax.cond(fits, by_segments, jax.checkpoint(by_pitch), notes)

  def independent_draw(self, notes: jax.Array, uniforms: jax.Array,
                       temperature: float) -> jax.Array:
    """float32[batch, 106]: a length in quarters for each note on (0 elsewhere).

    The lengths' distributions are computed for the sounding notes only (at most
    NADE_SEGMENTS - 1 per row; for all 106 pitches when a row has more)."""
    def draw(pitches):
      pre = jnp.broadcast_to(self.hidden_bias[:, None, :],
                             pitches.shape + self.w_pitch.shape[1:])
      u = jnp.take_along_axis(uniforms, pitches, axis=-1)
      return self.quarters(_inverse_cdf(self.logits(pre, pitches) / temperature, u))

    def by_segments(notes):
      order, on = _sounding_order(notes, NADE_SEGMENTS - 1)
      rows = jnp.arange(notes.shape[0])[:, None]
      return jnp.zeros_like(notes).at[rows, order].max(jnp.where(on > 0.5, draw(order), 0.0))

    def by_pitch(notes):
      return draw(jnp.broadcast_to(jnp.arange(NUM_NOTES), notes.shape))

    fits = _fits_segments(notes)
    quarters = jax.lax.cond(fits, by_segments, by_pitch, notes)
    return jnp.where(notes > 0.5, quarters, 0.0)


@flax.struct.dataclass
class IndependentNotes:
  """One independent Bernoulli per pitch.

  logits: float32[..., 106]. lengths: the note lengths' `LengthHead` (frames with note
  lengths), else None.
  """

  logits: jax.Array
  lengths: LengthHead | None = None

  def scores(self, notes: jax.Array, quarters: jax.Array | None = None):
    """(conditional logits float32[..., 106], -log p(lengths | notes) float32[...] or None)."""
    if self.lengths is None:
      return self.logits, None
    return self.logits, self.lengths.independent_nll(notes, quarters)

  def conditional_logits(self, notes: jax.Array) -> jax.Array:
    """float32[..., 106]: the logit of each pitch (the other pitches do not matter)."""
    del notes
    return self.logits

  def noise(self, rng: jax.Array) -> jax.Array:
    """The randomness one draw consumes: float32[batch, 106] uniforms."""
    return jax.random.uniform(rng, self.logits.shape, self.logits.dtype)

  def sample(self, rng: jax.Array, **kwargs) -> jax.Array:
    return self.draw(self.noise(rng), **kwargs)

  def draw(self, uniforms: jax.Array, *, temperature: float, max_polyphony: int = 0,
           allowed: jax.Array | None = None) -> jax.Array:
    """float32[batch, 106] in {0, 1}: Bernoulli(sigmoid(logit / temperature)).

    With max_polyphony = k > 0, of the sampled notes the k with the largest logits stay
    (ties to the lower pitch). `allowed` bool[106] masks pitches out.
    """
    probs = jax.nn.sigmoid(self.logits / temperature)
    notes = uniforms < probs  # jax.random.bernoulli, with the uniforms drawn beforehand
    if allowed is not None:
      notes = notes & jnp.asarray(allowed, bool)
    if 0 < max_polyphony < NUM_NOTES:
      scores = jnp.where(notes, self.logits, -jnp.inf)
      _, top = jax.lax.top_k(scores, max_polyphony)  # int32[batch, k]
      in_top = jnp.any(top[..., :, None] == jnp.arange(NUM_NOTES), axis=-2)
      notes = notes & in_top
    return notes.astype(jnp.float32)

  def draw_with_lengths(self, uniforms: jax.Array, length_uniforms: jax.Array, *,
                        temperature: float, length_temperature: float = 1.0,
                        max_polyphony: int = 0, allowed: jax.Array | None = None):
    """(notes, lengths float32[batch, 106] quarters, 0 where off): `draw`, then a length for
    each note drawn by inverse CDF of `length_uniforms`."""
    notes = self.draw(uniforms, temperature=temperature, max_polyphony=max_polyphony,
                      allowed=allowed)
    return notes, self.lengths.independent_draw(notes, length_uniforms, length_temperature)


@flax.struct.dataclass
class NadeNotes:
  """A NADE over the 106 pitches, lowest first (Larochelle & Murray 2011; RNN-NADE).

  p(v_i = 1 | v_<i) = sigmoid(visible_bias_i + w_out[:, i] . sigmoid(hidden_bias +
  sum_{j<i} v_j w_in[j])), with both biases given by the model's state.

  visible_bias: float32[..., 106]; hidden_bias: float32[..., H];
  w_in: float32[106, H]; w_out: float32[H, 106]. lengths: with note lengths, the
  `LengthHead` that draws each note's length right after its pitch (and whose class then
  joins the state: every later pitch and length is conditioned on it); else None.
  """

  visible_bias: jax.Array
  hidden_bias: jax.Array
  w_in: jax.Array
  w_out: jax.Array
  lengths: LengthHead | None = None

  def conditional_logits(self, notes: jax.Array, quarters: jax.Array | None = None) -> jax.Array:
    """float32[..., 106]: logit of pitch i given the true pitches below it (and, with
    note lengths, their lengths `quarters` [..., 106]), all at once."""
    return self.scores(notes, quarters)[0]

  def scores(self, notes: jax.Array, quarters: jax.Array | None = None):
    """(conditional logits float32[..., 106], -log p(lengths | notes) float32[...] or None).

    The weight-sharing trick: the hidden pre-activation of pitch i adds up the input
    weights of the sounding pitches below it (with note lengths, plus `w_len_in` of each
    one's length class), so the exact likelihood costs one pass. That sum only changes
    after a sounding pitch, so a frame of k notes has k + 1 distinct hidden states: they
    are computed once each (`_by_segments`), which costs (k + 1) / 106 of doing it per
    pitch. Batches with a frame of SEGMENTS or more notes take the per-pitch pass
    (`_by_pitch`); both are exact. A note's length is scored from the state after the
    notes below it (`LengthHead`), before its own length is added.
    """
    notes = notes.astype(jnp.float32)
    if self.lengths is None:
      classes = jnp.zeros(notes.shape, jnp.int32)
    else:
      classes = self.lengths.classes(quarters)
    fits = _fits_segments(notes)
    # The per-pitch pass rematerialised: differentiating the cond otherwise fills its
    # residuals ([..., 106, H] zeros, 15 ms of a quickstart step) in every step that
    # takes the segments.
    logits, length_nll = jax.lax.cond(fits, self._by_segments, jax.checkpoint(self._by_pitch),
                                      notes, classes)
    return logits, (None if self.lengths is None else length_nll)

  def _rows(self, pitches: jax.Array, classes: jax.Array) -> jax.Array:
    """float32[..., K, H]: what each (pitch, length class) adds to the hidden state."""
    rows = self.w_in[pitches]
    return rows if self.lengths is None else rows + self.lengths.w_len_in[classes]

  def _by_pitch(self, notes: jax.Array, classes: jax.Array):
    pitches = jnp.broadcast_to(jnp.arange(NUM_NOTES), notes.shape)
    contributions = notes[..., :, None] * self._rows(pitches, classes)  # [..., 106, H]
    below = self.hidden_bias[..., None, :] + cumsum(contributions, axis=-2) - contributions
    logits = self.visible_bias + jnp.einsum("...ih,hi->...i", jax.nn.sigmoid(below), self.w_out)
    if self.lengths is None:
      return logits, jnp.zeros(notes.shape[:-1], jnp.float32)
    return logits, self.lengths.nll_of(self.lengths.logits(below, pitches), classes, notes)

  def _by_segments(self, notes: jax.Array, classes: jax.Array):
    """Exact for frames of fewer than NADE_SEGMENTS notes."""
    order, sounding = _sounding_order(notes, NADE_SEGMENTS - 1)
    ordered_classes = jnp.take_along_axis(classes, order, axis=-1)
    rows = self._rows(order, ordered_classes) * sounding[..., None]  # [..., most, H]
    starts = self.hidden_bias[..., None, :] + jnp.concatenate(
        [jnp.zeros_like(rows[..., :1, :]), cumsum(rows, axis=-2)],
        axis=-2)  # segment s: the first s sounding pitches added
    outputs = jax.nn.sigmoid(starts) @ self.w_out
    segment = (cumsum(notes) - notes).astype(jnp.int32)  # notes below pitch i
    chosen = jnp.take_along_axis(outputs, segment[..., None, :], axis=-2)[..., 0, :]
    logits = self.visible_bias + chosen
    if self.lengths is None:
      return logits, jnp.zeros(notes.shape[:-1], jnp.float32)
    length_logits = self.lengths.logits(starts[..., :-1, :], order)
    return logits, self.lengths.nll_of(length_logits, ordered_classes, sounding)

  def noise(self, rng: jax.Array) -> jax.Array:
    """The randomness one draw consumes: float32[batch, 106] uniforms, one per pitch."""
    return jax.random.uniform(rng, self.visible_bias.shape, jnp.float32)

  def sample(self, rng: jax.Array, **kwargs) -> jax.Array:
    return self.draw(self.noise(rng), **kwargs)

  def draw(self, uniforms: jax.Array, *, temperature: float, max_polyphony: int = 0,
           allowed: jax.Array | None = None) -> jax.Array:
    """float32[batch, 106] in {0, 1}, drawn pitch by pitch from the lowest.

    Exact ancestral sampling with one uniform u_i per pitch (v_i = u_i < p_i). Between
    two sounding pitches the NADE state does not change, so every pitch up to the next
    sounding one is decided at once: the loop runs once per sampled note (plus one),
    not once per pitch. With max_polyphony = k > 0 the frame ends after k notes (the
    conditionals truncated); `allowed` bool[106] gives masked pitches probability 0.
    """
    return self._draw(uniforms, None, temperature, 1.0, max_polyphony, allowed)[0]

  def draw_with_lengths(self, uniforms: jax.Array, length_uniforms: jax.Array, *,
                        temperature: float, length_temperature: float = 1.0,
                        max_polyphony: int = 0, allowed: jax.Array | None = None):
    """(notes float32[batch, 106], lengths float32[batch, 106] quarters, 0 where off): as
    `draw`, each note's length drawn (by inverse CDF of `length_uniforms`) right after it."""
    return self._draw(uniforms, length_uniforms, temperature, length_temperature,
                      max_polyphony, allowed)

  def _draw(self, uniforms, length_uniforms, temperature, length_temperature, max_polyphony,
            allowed):
    batch = self.visible_bias.shape[0]
    allowed = _allowed_or_all(allowed)
    pitch = jnp.arange(NUM_NOTES)
    limit = max_polyphony if 0 < max_polyphony < NUM_NOTES else NUM_NOTES
    heads = self.lengths if length_uniforms is not None else None

    def cond(state):
      return ~jnp.all(state[3])

    def body(state):
      hidden_in, notes, start, done, count, lengths = state
      logits = self.visible_bias + jax.nn.sigmoid(hidden_in) @ self.w_out
      on = (uniforms < jax.nn.sigmoid(logits / temperature)) & allowed
      on = on & (pitch >= start[:, None]) & ~done[:, None]
      found = jnp.any(on, axis=-1)
      first = first_argmax(on)
      chosen = on & (pitch == first[:, None])
      notes = notes | chosen
      row = self.w_in[first]
      if heads is not None:
        length_logits = heads.logits(hidden_in[:, None, :], first[:, None])[:, 0]
        u = jnp.take_along_axis(length_uniforms, first[:, None], axis=-1)[:, 0]
        cls = _inverse_cdf(length_logits / length_temperature, u)
        lengths = jnp.where(chosen, heads.quarters(cls)[:, None], lengths)
        row = row + heads.w_len_in[cls]
      hidden_in = hidden_in + jnp.where(found[:, None], row, 0.0)
      count = count + found
      done = done | ~found | (count >= limit)
      return hidden_in, notes, first + 1, done, count, lengths

    state = (self.hidden_bias.astype(jnp.float32), jnp.zeros((batch, NUM_NOTES), bool),
             jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool),
             jnp.zeros((batch,), jnp.int32), jnp.zeros((batch, NUM_NOTES), jnp.float32))
    _, notes, _, _, _, lengths = jax.lax.while_loop(cond, body, state)
    return notes.astype(jnp.float32), lengths


@flax.struct.dataclass
class CategoricalDuration:
  """Class k means (k + 1) / steps_per_quarter quarter notes; longer ones are the last class.

  logits: float32[..., max_duration_steps].
  """

  logits: jax.Array
  steps_per_quarter: int = flax.struct.field(pytree_node=False)

  def nll(self, quarters: jax.Array) -> jax.Array:
    """float32[...]: -log p(class of `quarters`)."""
    classes = duration_classes(quarters, self.steps_per_quarter, self.logits.shape[-1], xp=jnp)
    log_probs = jax.nn.log_softmax(self.logits, axis=-1)
    return -jnp.take_along_axis(log_probs, classes[..., None], axis=-1)[..., 0]

  def noise(self, rng: jax.Array) -> jax.Array:
    """float32[batch, classes] Gumbel noise (jax.random.categorical's)."""
    return jax.random.gumbel(rng, self.logits.shape, self.logits.dtype)

  def sample(self, rng: jax.Array, **kwargs) -> jax.Array:
    return self.draw(self.noise(rng), **kwargs)

  def draw(self, gumbel: jax.Array, *, temperature: float, top_p: float = 1.0) -> jax.Array:
    """float32[batch] quarters: a class from softmax(logits / temperature), nucleus top_p."""
    logits = self.logits / temperature
    if not isinstance(top_p, (int, float)):  # traced (`sampling.make_tunable_sampler`)
      keep = _nucleus_mask(logits, top_p) | (top_p >= 1.0)
      logits = jnp.where(keep, logits, -jnp.inf)
    elif top_p < 1.0:
      logits = jnp.where(_nucleus_mask(logits, top_p), logits, -jnp.inf)
    k = first_argmax(gumbel + logits)  # the Gumbel-max draw of jax.random.categorical
    table = quarters_of_class(self.steps_per_quarter, self.logits.shape[-1])
    return jnp.asarray(table)[k]


def _nucleus_mask(logits: jax.Array, top_p: float) -> jax.Array:
  """bool[..., C]: the smallest set of most probable classes with mass >= top_p."""
  probs = jax.nn.softmax(logits, axis=-1)
  order = jnp.argsort(-logits, axis=-1)  # stable: ties keep the lower class first
  sorted_probs = jnp.take_along_axis(probs, order, axis=-1)
  mass_before = cumsum(sorted_probs) - sorted_probs
  keep_sorted = mass_before < top_p
  keep_sorted = keep_sorted.at[..., 0].set(True)  # the most probable is always kept
  return jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)


@flax.struct.dataclass
class LogNormalDuration:
  """The study's regression: log(duration) ~ Normal(mean, exp(log_std)).

  mean_log_std: float32[..., 2]. Durations are floored at one grid step and sampled
  ones snapped to the grid, at most max_steps steps.
  """

  mean_log_std: jax.Array
  steps_per_quarter: int = flax.struct.field(pytree_node=False)
  max_steps: int = flax.struct.field(pytree_node=False)

  def nll(self, quarters: jax.Array) -> jax.Array:
    """float32[...]: Gaussian NLL of log(duration) (a density: it may be negative)."""
    mean, log_std = self.mean_log_std[..., 0], self.mean_log_std[..., 1]
    floor = 1.0 / self.steps_per_quarter
    target = jnp.log(jnp.maximum(jnp.asarray(quarters, jnp.float32), floor))
    z = (target - mean) * jnp.exp(-log_std)
    return 0.5 * jnp.square(z) + log_std + _HALF_LOG_2PI

  def noise(self, rng: jax.Array) -> jax.Array:
    """float32[batch] standard normal noise."""
    return jax.random.normal(rng, self.mean_log_std.shape[:-1], jnp.float32)

  def sample(self, rng: jax.Array, **kwargs) -> jax.Array:
    return self.draw(self.noise(rng), **kwargs)

  def draw(self, normal: jax.Array, *, temperature: float, top_p: float = 1.0) -> jax.Array:
    """float32[batch] quarters on the grid: std scaled by temperature (top_p unused)."""
    del top_p
    spq = self.steps_per_quarter
    mean, log_std = self.mean_log_std[..., 0], self.mean_log_std[..., 1]
    log_duration = mean + jnp.exp(log_std) * temperature * normal
    # Clip in log space first so exp cannot overflow; then snap to the grid.
    log_duration = jnp.minimum(log_duration, float(np.log(self.max_steps / spq)))
    steps = jnp.clip(jnp.round(jnp.exp(log_duration) * spq), 1, self.max_steps)
    steps = jnp.where(jnp.isnan(steps), 1.0, steps).astype(jnp.int32)  # NaN: one step
    return jnp.asarray(quarters_of_class(spq, self.max_steps))[steps - 1]


def velocity_bin(velocity, bins: int, *, xp=jnp):
  """MIDI velocity 1..127 -> class 0..bins-1 (equal-width bins over 1..127)."""
  v = xp.clip(xp.asarray(velocity, xp.float32), 1.0, 127.0)
  return xp.clip(xp.floor((v - 1.0) * bins / 127.0), 0, bins - 1).astype(xp.int32)


def velocity_of_bin(k, bins: int, *, xp=jnp):
  """Class -> the MIDI velocity at its centre (a whole number in 1..127)."""
  return xp.clip(xp.floor(1.0 + (xp.asarray(k, xp.float32) + 0.5) * 127.0 / bins + 0.5), 1, 127)


@flax.struct.dataclass
class CategoricalVelocity:
  """The onset's mean MIDI velocity in `logits.shape[-1]` equal-width classes.

  logits: float32[..., velocity_bins]. A frame without notes has no velocity: its
  target is 0 and it costs nothing.
  """

  logits: jax.Array

  def nll(self, velocity: jax.Array) -> jax.Array:
    """float32[...]: -log p(class of velocity) where velocity > 0, else 0."""
    classes = velocity_bin(velocity, self.logits.shape[-1])
    log_probs = jax.nn.log_softmax(self.logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, classes[..., None], axis=-1)[..., 0]
    return jnp.where(jnp.asarray(velocity) > 0, nll, 0.0)

  def noise(self, rng: jax.Array) -> jax.Array:
    return jax.random.gumbel(rng, self.logits.shape, self.logits.dtype)

  def sample(self, rng: jax.Array, **kwargs) -> jax.Array:
    return self.draw(self.noise(rng), **kwargs)

  def draw(self, gumbel: jax.Array, *, temperature: float) -> jax.Array:
    """float32[batch]: a class from softmax(logits / temperature), as its centre velocity."""
    k = first_argmax(gumbel + self.logits / temperature)
    return velocity_of_bin(k, self.logits.shape[-1]).astype(jnp.float32)


@flax.struct.dataclass
class FrameDistribution:
  """A model's distribution over the next frame (one per leading index).

  notes: IndependentNotes or NadeNotes. duration: CategoricalDuration or
  LogNormalDuration. velocity: CategoricalVelocity for frames with dynamics, else None.
  """

  notes: IndependentNotes | NadeNotes
  duration: CategoricalDuration | LogNormalDuration
  velocity: CategoricalVelocity | None = None

  def noise(self, rng: jax.Array) -> dict:
    """All the randomness one frame's draw consumes (only shapes are read, so it works on
    `jax.eval_shape`'s abstract predictions too): drawn ahead of the sampling loop."""
    if self.velocity is None:  # two keys, as before dynamics: the same seed, the same music
      notes_rng, duration_rng = jax.random.split(rng)
      noise = {"notes": self.notes.noise(notes_rng), "duration": self.duration.noise(duration_rng)}
    else:
      notes_rng, duration_rng, velocity_rng = jax.random.split(rng, 3)
      noise = {"notes": self.notes.noise(notes_rng), "duration": self.duration.noise(duration_rng),
               "velocity": self.velocity.noise(velocity_rng)}
    if self.notes.lengths is not None:  # a key of its own: the other parts' draws unchanged
      noise["lengths"] = self.notes.noise(jax.random.fold_in(rng, LENGTH_STREAM))
    return noise


Prediction = FrameDistribution

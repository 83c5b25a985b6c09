"""The model-independent sampler: prime a model, then generate with one `lax.scan`.

The sampler drives any step function

  step_fn(frame: float32[batch, 107], carry) -> (Prediction, carry)

where the prediction (fields `note_logits` float32[batch, 106] and `duration`, see
`musicgen_jax.models.Prediction`) is for the frame after `frame`. An RNN's carry is its
state, a Transformer's its KV cache, a windowed model's its recent frames; the sampler
never looks inside it. Extra traced arguments (e.g. the model's parameters, so that they
are not baked into the compiled program as constants) can be passed through:
`step_fn(frame, carry, *step_args)`.

Typical use:

  settings = SampleSettings(num_frames=512, temperature=0.9)
  sampler = make_sampler(step_fn, settings)   # compiled once per input shapes
  frames = sampler(carry, prime, jax.random.key(0))  # float32[batch, P + 512, 107]

Randomness: generated frame i (0-based) uses `jax.random.fold_in(rng, i)`, split once
into a key for the notes and one for the duration; the same seed, settings and inputs
give bit-identical output.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.encoding import FRAME_DIM, NUM_NOTES

DURATION_HEADS = ("categorical", "regression")

StepFn = Callable[..., tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class SampleSettings:
  """How to sample; frozen and hashable, so it can be a static argument of `jax.jit`.

  The duration head and grid are part of the settings (not read from a model config)
  so that the sampler stays independent of the models; `from_model_config` copies them
  from a `ModelConfig`.
  """

  num_frames: int = 512  # frames to generate after the prime
  temperature: float = 1.0  # notes: Bernoulli(sigmoid(logit / temperature))
  duration_temperature: float = 1.0  # categorical: logits / t; regression: std * t
  top_p: float = 1.0  # nucleus over duration classes (categorical head); 1 = off
  max_polyphony: int = 0  # keep at most this many sampled notes (most probable); 0 = all
  duration_head: str = "categorical"  # one of DURATION_HEADS, as the model was trained
  steps_per_quarter: int = 12  # the duration grid: class k means (k + 1) / this
  max_duration_steps: int = 96  # regression head: longest sampled duration, grid steps

  def __post_init__(self):
    if self.duration_head not in DURATION_HEADS:
      raise ValueError(
          f"unknown duration_head {self.duration_head!r}; choose one of "
          f"{', '.join(DURATION_HEADS)}")
    for name in ("num_frames", "steps_per_quarter", "max_duration_steps"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if (not isinstance(self.max_polyphony, int) or isinstance(self.max_polyphony, bool)
        or not 0 <= self.max_polyphony):
      raise ValueError(
          f"max_polyphony must be a non-negative integer (0 = no limit), got "
          f"{self.max_polyphony!r}")
    for name in ("temperature", "duration_temperature"):
      value = getattr(self, name)
      if not float(value) > 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not 0.0 < float(self.top_p) <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

  @classmethod
  def from_model_config(cls, config, **kwargs) -> "SampleSettings":
    """Settings whose duration head and grid match `config` (a `ModelConfig`)."""
    return cls(duration_head=config.duration_head,
               steps_per_quarter=config.steps_per_quarter,
               max_duration_steps=config.max_duration_steps, **kwargs)


def _sample_notes(note_logits: jax.Array, rng: jax.Array,
                  settings: SampleSettings) -> jax.Array:
  """float32[batch, 106] logits -> float32[batch, 106] in {0, 1}."""
  probs = jax.nn.sigmoid(note_logits / settings.temperature)
  notes = jax.random.bernoulli(rng, probs)
  k = settings.max_polyphony
  if 0 < k < NUM_NOTES:
    # Among the sampled notes keep the k with the largest logits (the most probable;
    # the ranking does not depend on the temperature). Ties go to the lower pitch.
    scores = jnp.where(notes, note_logits, -jnp.inf)
    _, top = jax.lax.top_k(scores, k)  # int32[batch, k]
    in_top = jnp.any(top[..., :, None] == jnp.arange(NUM_NOTES), axis=-2)
    notes = notes & in_top
  return notes.astype(jnp.float32)


def _nucleus_mask(logits: jax.Array, top_p: float) -> jax.Array:
  """bool[..., C]: the smallest set of most probable classes with mass >= top_p."""
  probs = jax.nn.softmax(logits, axis=-1)
  order = jnp.argsort(-logits, axis=-1)  # stable: ties keep the lower class first
  sorted_probs = jnp.take_along_axis(probs, order, axis=-1)
  mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
  keep_sorted = mass_before < top_p
  keep_sorted = keep_sorted.at[..., 0].set(True)  # the most probable is always kept
  return jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)


def _sample_duration(duration: jax.Array, rng: jax.Array,
                     settings: SampleSettings) -> jax.Array:
  """The duration head's output -> float32[batch], duration in quarter notes."""
  spq = settings.steps_per_quarter
  if settings.duration_head == "categorical":
    logits = duration / settings.duration_temperature
    if settings.top_p < 1.0:
      logits = jnp.where(_nucleus_mask(logits, settings.top_p), logits, -jnp.inf)
    k = jax.random.categorical(rng, logits, axis=-1)
    return _grid_quarters(k + 1, duration.shape[-1], spq)
  if duration.shape[-1] != 2:
    raise ValueError(
        f"regression duration must be float32[..., 2] (mean, log-std of "
        f"log-duration), got shape {duration.shape}")
  mean, log_std = duration[..., 0], duration[..., 1]
  std = jnp.exp(log_std) * settings.duration_temperature
  log_duration = mean + std * jax.random.normal(rng, mean.shape, jnp.float32)
  # Clip in log space first so exp cannot overflow; then snap to the grid.
  log_duration = jnp.minimum(log_duration,
                             float(np.log(settings.max_duration_steps / spq)))
  steps = jnp.clip(jnp.round(jnp.exp(log_duration) * spq), 1,
                   settings.max_duration_steps)
  steps = jnp.where(jnp.isnan(steps), 1.0, steps)  # a NaN prediction: one step
  return _grid_quarters(steps.astype(jnp.int32), settings.max_duration_steps, spq)


def _grid_quarters(steps: jax.Array, max_steps: int, spq: int) -> jax.Array:
  """int32[...] grid steps in 1..max_steps -> float32[...] quarters, steps / spq.

  Looked up in a table divided on the host, so each value is the correctly rounded
  float32 quotient (a compiled division by a constant may become a multiplication by
  its reciprocal, one ulp off), the same value the codec writes.
  """
  table = np.arange(1, max_steps + 1, dtype=np.float32) / np.float32(spq)
  return jnp.asarray(table)[steps - 1]


def sample_frame(pred, rng: jax.Array, settings: SampleSettings) -> jax.Array:
  """Samples one frame per batch element from a prediction.

  Args:
    pred: a `Prediction` with note_logits float32[batch, 106] and duration
      float32[batch, max_duration_steps] (categorical logits) or float32[batch, 2]
      (regression: mean and log-std of log(duration in quarters)).
    rng: a PRNG key; split once here for the notes and the duration.
    settings: the `SampleSettings`.

  Returns:
    float32[batch, 107]: notes in {0, 1} at 0..105, the duration in quarter notes (a
    positive multiple of 1 / steps_per_quarter) at index 106 (`DURATION_INDEX`).
  """
  note_logits = jnp.asarray(pred.note_logits, jnp.float32)
  duration = jnp.asarray(pred.duration, jnp.float32)
  if note_logits.ndim != 2 or note_logits.shape[-1] != NUM_NOTES:
    raise ValueError(
        f"note_logits must be float32[batch, {NUM_NOTES}], got shape {note_logits.shape}")
  if duration.ndim != 2 or duration.shape[0] != note_logits.shape[0]:
    raise ValueError(
        f"duration must be float32[batch, D] with batch {note_logits.shape[0]}, got "
        f"shape {duration.shape}")
  note_rng, duration_rng = jax.random.split(rng)
  notes = _sample_notes(note_logits, note_rng, settings)
  quarters = _sample_duration(duration, duration_rng, settings)
  return jnp.concatenate([notes, quarters[:, None]], axis=-1)


def generate(step_fn: StepFn, carry: Any, prime: jax.Array, rng: jax.Array,
             settings: SampleSettings, *step_args) -> jax.Array:
  """Primes the model with `prime`, then samples `settings.num_frames` frames.

  The first P - 1 prime frames are fed with one `lax.scan`; then one `lax.scan` of
  length num_frames feeds the previous frame (the last prime frame first, then each
  sampled frame), gets the prediction and samples the next frame. So step_fn runs
  P + num_frames - 1 times and only the output grows with the length. Traceable: call
  it inside `jax.jit` with `settings` (and `step_fn`) static, or use `make_sampler`.

  Args:
    step_fn: `step_fn(frame float32[batch, 107], carry, *step_args) -> (Prediction,
      carry)`; the carry keeps its structure, shapes and dtypes.
    carry: the model's initial carry for this batch.
    prime: float32[batch, P, 107] with P >= 1: the frames that start every sample.
    rng: a PRNG key.
    settings: the `SampleSettings`.
    *step_args: passed on to every `step_fn` call (e.g. the model's parameters).

  Returns:
    float32[batch, P + num_frames, 107]: the prime followed by the sampled frames.
  """
  prime = jnp.asarray(prime, jnp.float32)
  if prime.ndim != 3 or prime.shape[-1] != FRAME_DIM or prime.shape[1] < 1:
    raise ValueError(
        f"prime must be float32[batch, P, {FRAME_DIM}] with P >= 1, got shape "
        f"{prime.shape}")
  step = lambda frame, carry: step_fn(frame, carry, *step_args)
  prime_t = jnp.swapaxes(prime, 0, 1)  # [P, batch, 107]

  def consume(carry, frame):
    _, carry = step(frame, carry)
    return carry, None

  if prime_t.shape[0] > 1:
    carry, _ = jax.lax.scan(consume, carry, prime_t[:-1])

  def body(state, index):
    frame, carry = state
    pred, carry = step(frame, carry)
    new_frame = sample_frame(pred, jax.random.fold_in(rng, index), settings)
    return (new_frame, carry), new_frame

  _, sampled = jax.lax.scan(body, (prime_t[-1], carry),
                            jnp.arange(settings.num_frames, dtype=jnp.uint32))
  return jnp.concatenate([prime, jnp.swapaxes(sampled, 0, 1)], axis=1)


def make_sampler(step_fn: StepFn, settings: SampleSettings) -> Callable[..., jax.Array]:
  """A jitted `sampler(carry, prime, rng, *step_args) -> float32[batch, P + N, 107]`.

  Same as `generate(step_fn, carry, prime, rng, settings, *step_args)`; it compiles
  once per input shapes and dtypes and reuses the program on later calls. Pass large
  arrays such as model parameters as `step_args`, not inside `step_fn`'s closure, so
  they stay arguments of the program rather than constants compiled into it.
  """
  if not isinstance(settings, SampleSettings):
    raise TypeError(f"settings must be SampleSettings, got {type(settings).__name__}")

  def sampler(carry, prime, rng, *step_args):
    return generate(step_fn, carry, prime, rng, settings, *step_args)

  return jax.jit(sampler)

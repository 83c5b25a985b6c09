"""The model-independent sampler: prime a model, then generate with one `lax.scan`.

The sampler drives any step function

  step_fn(frame: float32[batch, F], carry, *step_args) -> (FrameDistribution, carry)

whose prediction (fields [batch, ...], see `musicgen_jax.models.FrameDistribution`) is
for the frame after `frame`; the prediction samples itself (`notes.sample`,
`duration.sample`), so the sampler never asks which model or head it drives. An RNN's
carry is its state, a Transformer's its KV cache, a windowed model's its recent frames;
the sampler never looks inside it. Extra traced arguments (e.g. the model's parameters,
so that they are not compiled in as constants) are passed through as `step_args`.

    settings = SampleSettings(num_frames=512, temperature=0.9)
    sampler = make_sampler(step_fn, settings)          # compiled once per input shapes
    frames = sampler(carry, prime, jax.random.key(0), allowed)  # [batch, P + 512, F]

`make_tunable_sampler` takes the temperatures and top-p (`TUNABLE`) as arguments instead,
so one compiled program serves every value of them (the studio changes them per request).

Randomness: generated frame i (0-based) uses `jax.random.fold_in(rng, i)`, split once
into a key for the notes and one for the duration; the same seed, settings and inputs
give bit-identical output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from musicgen_jax.encoding import NUM_NOTES, FrameLayout, frame_layout, next_bar_step
from musicgen_jax.settings import Settings, non_negative, positive, setting

StepFn = Callable[..., tuple[Any, Any]]
NOISE_BLOCK = 128  # frames whose randomness is drawn together, ahead of the loop
# Settings that only scale or mask the distributions drawn from: they can be traced values.
TUNABLE = ("temperature", "duration_temperature", "top_p", "velocity_temperature",
           "length_temperature")


@dataclasses.dataclass(frozen=True)
class SampleSettings(Settings):
  """How to sample; frozen and hashable, so it can be a static argument of `jax.jit`."""

  num_frames: int = setting(512, "Frames to generate after the prime.", check=positive)
  temperature: float = setting(1.0, "Note temperature: each pitch's logit is divided by it.",
                               check=positive)
  duration_temperature: float = setting(
      1.0, "Duration temperature (categorical logits / T; regression: the spread times T).",
      check=positive)
  top_p: float = setting(1.0, "Nucleus mass over duration classes; 1 = off.",
                         check=lambda p: None if 0 < p <= 1 else "must be in (0, 1] (1 = off)")
  velocity_temperature: float = setting(
      1.0, "Velocity temperature (models of frames with dynamics): class logits / T.",
      check=positive)
  length_temperature: float = setting(
      1.0, "Note length temperature (models of frames with note lengths): class logits / T.",
      check=positive)
  max_polyphony: int = setting(0, "At most this many notes per frame (independent head: the "
                               "most probable of those sampled; nade: the first drawn); "
                               "0 = no limit.", check=non_negative)


def sample_frame(pred, rng: jax.Array, settings: SampleSettings,
                 allowed: jax.Array | None = None) -> jax.Array:
  """Samples one frame per batch element from a prediction.

  Args:
    pred: a FrameDistribution with fields [batch, ...].
    rng: a PRNG key; split once here for the notes and the duration (and velocity).
    settings: the `SampleSettings`.
    allowed: optional bool[106]: pitches that may sound (others never do).

  Returns:
    float32[batch, F]: notes in {0, 1} at 0..105, the duration in quarter notes (a
    positive multiple of 1 / steps_per_quarter) at index 106 (`DURATION_INDEX`); with a
    velocity head the velocity next (0 where no note sounds); with a length head the 106
    note lengths (0 where no note starts). Metre columns are the sampler's to add.
  """
  return draw_frame(pred, pred.noise(rng), settings, allowed)


def draw_frame(pred, noise: dict, settings: SampleSettings,
               allowed: jax.Array | None = None) -> jax.Array:
  """`sample_frame` with its randomness given (`pred.noise(rng)`, drawn ahead)."""
  lengths = None
  if pred.notes.lengths is None:
    notes = pred.notes.draw(noise["notes"], temperature=settings.temperature,
                            max_polyphony=settings.max_polyphony, allowed=allowed)
  else:
    notes, lengths = pred.notes.draw_with_lengths(
        noise["notes"], noise["lengths"], temperature=settings.temperature,
        length_temperature=settings.length_temperature, max_polyphony=settings.max_polyphony,
        allowed=allowed)
  quarters = pred.duration.draw(noise["duration"], temperature=settings.duration_temperature,
                                top_p=settings.top_p)
  if notes.ndim != 2 or notes.shape[-1] != NUM_NOTES or quarters.shape != notes.shape[:1]:
    raise ValueError(f"a prediction must give notes [batch, {NUM_NOTES}] and durations "
                     f"[batch]; got {notes.shape} and {quarters.shape}")
  parts = [notes, quarters[:, None]]
  if pred.velocity is not None:
    velocity = pred.velocity.draw(noise["velocity"], temperature=settings.velocity_temperature)
    parts.append(jnp.where(notes.any(axis=-1), velocity, 0.0)[:, None])
  if lengths is not None:
    parts.append(lengths)
  return jnp.concatenate(parts, axis=-1)


def next_metre(frame: jax.Array, layout: FrameLayout, steps_per_quarter: int) -> jax.Array:
  """float32[batch, 2]: the metre columns of the frame after `frame` [batch, F]: its bar
  position advanced by its duration (on the grid, modulo the bar), the same bar length."""
  step = next_bar_step(frame, layout, steps_per_quarter, xp=jnp)
  return jnp.stack([step / steps_per_quarter, frame[:, layout.metre_columns.start + 1]],
                   axis=-1)


def generate(step_fn: StepFn, carry: Any, prime: jax.Array, rng: jax.Array,
             settings: SampleSettings, *step_args, allowed: jax.Array | None = None
             ) -> jax.Array:
  """Primes the model with `prime`, then samples `settings.num_frames` frames.

  The first P - 1 prime frames are fed with one `lax.scan`; then a `lax.scan` over the
  num_frames frames (in blocks whose randomness is drawn ahead) feeds the previous frame
  (the last prime frame first, then each sampled frame), gets the prediction and samples
  the next frame. So step_fn runs P + num_frames - 1 times and only the output grows with
  the length. Traceable: call it inside `jax.jit` with `settings` (and `step_fn`) static,
  or use `make_sampler`.

  Args:
    step_fn: `step_fn(frame float32[batch, F], carry, *step_args) -> (prediction,
      carry)`; the carry keeps its structure, shapes and dtypes.
    carry: the model's initial carry for this batch.
    prime: float32[batch, P, F] with P >= 1: the frames that start every sample.
    rng: a PRNG key.
    settings: the `SampleSettings`.
    *step_args: passed on to every `step_fn` call (e.g. the model's parameters).
    allowed: optional bool[106], the pitches that may be sampled.

  Returns:
    float32[batch, P + num_frames, F]: the prime followed by the sampled frames.
  """
  prime = jnp.asarray(prime, jnp.float32)
  frame_layout(prime.shape, "prime", "batch, P")
  if prime.shape[1] < 1:
    raise ValueError(f"the prime needs at least one frame, got shape {prime.shape}")
  step = lambda frame, carry: step_fn(frame, carry, *step_args)
  prime_t = jnp.swapaxes(prime, 0, 1)  # [P, batch, F]

  def consume(carry, frame):
    _, carry = step(frame, carry)
    return carry, None

  if prime_t.shape[0] > 1:
    carry, _ = jax.lax.scan(consume, carry, prime_t[:-1])

  return jnp.concatenate([prime, _sample_after(step, carry, prime_t[-1], rng, settings,
                                               allowed)], axis=1)


def _sample_after(step, carry, frame, rng, settings: SampleSettings, allowed) -> jax.Array:
  """float32[batch, num_frames, F]: the frames sampled after feeding `frame`; with metre
  columns, each frame's position follows from the one before (the prime's last first)."""
  layout = frame_layout(frame.shape, "frame", "batch")

  def body(state, noise):
    frame, carry = state
    pred, carry = step(frame, carry)
    new_frame = draw_frame(pred, noise, settings, allowed)
    if layout.metre:
      new_frame = jnp.concatenate(
          [new_frame, next_metre(frame, layout, pred.duration.steps_per_quarter)], axis=-1)
    return (new_frame, carry), new_frame

  # The randomness of NOISE_BLOCK frames is drawn at once, outside the per-frame loop
  # (frame i's still comes from fold_in(rng, i)): the loop holds only the model's step
  # and the draw, few ops per frame, and memory stays bounded by the block.
  abstract = jax.eval_shape(lambda f, c: step(f, c)[0], frame, carry)
  frame_noise = lambda i: abstract.noise(jax.random.fold_in(rng, i))

  def block(state, indices):
    return jax.lax.scan(body, state, jax.vmap(frame_noise)(indices))

  state, outputs = (frame, carry), []
  indices = jnp.arange(settings.num_frames, dtype=jnp.uint32)
  full = settings.num_frames // NOISE_BLOCK * NOISE_BLOCK
  if full:
    state, sampled = jax.lax.scan(block, state, indices[:full].reshape(-1, NOISE_BLOCK))
    outputs.append(sampled.reshape((full,) + sampled.shape[2:]))
  if full < settings.num_frames:
    state, sampled = block(state, indices[full:])
    outputs.append(sampled)
  sampled = jnp.concatenate(outputs) if len(outputs) > 1 else outputs[0]
  return jnp.swapaxes(sampled, 0, 1)


def make_sampler(step_fn: StepFn, settings: SampleSettings) -> Callable[..., jax.Array]:
  """A jitted `sampler(carry, prime, rng, allowed, *step_args) -> [batch, P + N, F]`.

  Same as `generate(step_fn, carry, prime, rng, settings, *step_args, allowed=allowed)`
  (`allowed` may be None); it compiles once per input shapes and dtypes. Pass large
  arrays such as model parameters as `step_args`, not inside `step_fn`'s closure, so
  they stay arguments of the program rather than constants compiled into it.
  """
  if not isinstance(settings, SampleSettings):
    raise TypeError(f"settings must be SampleSettings, got {type(settings).__name__}")

  def sampler(carry, prime, rng, allowed, *step_args):
    return generate(step_fn, carry, prime, rng, settings, *step_args, allowed=allowed)

  return jax.jit(sampler)


class _Tuned:
  """SampleSettings read inside a tunable sampler: the TUNABLE fields are traced scalars."""

  def __init__(self, settings: SampleSettings, values: dict):
    self._settings, self._values = settings, values

  def __getattr__(self, name):
    values = self.__dict__["_values"]
    return values[name] if name in values else getattr(self.__dict__["_settings"], name)


def program_settings(settings: SampleSettings) -> SampleSettings:
  """The settings that shape a tunable sampler's program: the TUNABLE fields at their
  defaults (two settings with the same program_settings share one compiled sampler)."""
  defaults = {f.name: f.default for f in dataclasses.fields(SampleSettings)}
  return dataclasses.replace(settings, **{k: defaults[k] for k in TUNABLE})


def tunable_values(settings: SampleSettings) -> dict:
  """{name: float32 scalar} of the TUNABLE fields, the `tuned` argument of a tunable
  sampler."""
  return {k: jnp.float32(getattr(settings, k)) for k in TUNABLE}


def make_tunable_sampler(step_fn: StepFn, settings: SampleSettings) -> Callable[..., jax.Array]:
  """`make_sampler` whose TUNABLE settings are an argument:
  `sampler(carry, prime, rng, allowed, tuned, *step_args)`, tuned = `tunable_values(s)`.

  Only `program_settings(settings)` is compiled in (the number of frames, the polyphony
  cap), so one compile serves every temperature and top-p; for the same values the output
  is bit-identical to `make_sampler`'s.
  """
  if not isinstance(settings, SampleSettings):
    raise TypeError(f"settings must be SampleSettings, got {type(settings).__name__}")
  fixed = program_settings(settings)

  def sampler(carry, prime, rng, allowed, tuned, *step_args):
    if set(tuned) != set(TUNABLE):
      raise ValueError(f"tuned must give exactly {', '.join(TUNABLE)}; got {sorted(tuned)}")
    return generate(step_fn, carry, prime, rng, _Tuned(fixed, tuned), *step_args,
                    allowed=allowed)

  return jax.jit(sampler)

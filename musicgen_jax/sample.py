"""Sampling from a trained workdir to MIDI files, and its CLI.

    python -m musicgen_jax.sample --workdir=W --num_frames=512 --num_samples=4 \
        --temperature=1.0 --prime_midi=F --prime_frames=10 --out_dir=O

Reads W/config.json (so no model flags) and the best-by-validation checkpoint (or
--step). The prime is the first --prime_frames frames of --prime_midi, encoded with the
run's own data settings, else of a held-out piece (--prime_split, --prime_piece; the
test split's first piece by default). Every sample starts with the same prime; all
--num_samples are generated in one batch by one compiled `lax.scan`
(`sampling.make_sampler` over `models.decode_step`). Writes O/sample_000.mid, ...,
a JSON of every setting beside each (sample_000.json) and, when matplotlib is
installed, a piano roll (sample_000.png).

Bad input (a missing workdir or checkpoint, an unreadable or short prime, a prime
longer than a windowed model's context, bad settings, an out_dir that cannot be
created) is reported as one line before any model is loaded or compiled.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from musicgen_jax import checkpoint as ckpt_lib
from musicgen_jax import plotting, sampling
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, NUM_NOTES, MidiError
from musicgen_jax.encoding import frames_to_midi, midi_to_frames
from musicgen_jax.models import ModelConfig, decode_step, init_carry

HELD_OUT_SPLITS = ("valid", "test")
DEFAULT_PRIME_SPLIT = "test"
MIDI_NAME = "sample_{:03d}.mid"
JSON_NAME = "sample_{:03d}.json"
PNG_NAME = "sample_{:03d}.png"
# Models that see at most cfg.seq_len frames: a longer prime could not all be read.
WINDOWED_MODELS = ("transformer", "bilstm")


@dataclasses.dataclass(frozen=True)
class Prime:
  """The frames every sample starts with, and where they came from.

  frames: float32[prime_frames, 107].
  source: JSON-able description: {"kind": "midi", "path": ...} or
    {"kind": "dataset", "split": ..., "piece_index": ..., "piece_name": ...}.
  """

  frames: np.ndarray
  source: dict


@dataclasses.dataclass(frozen=True)
class SampleResult:
  """What `sample_workdir` wrote and measured.

  frames: float32[num_samples, prime_frames + num_frames, 107], the prime first.
  midi_paths, json_paths: one per sample; png_paths: one per sample, or empty when
    matplotlib is missing or plotting was turned off.
  record: the settings and measurements shared by every sample's JSON.
  """

  frames: np.ndarray
  midi_paths: list[str]
  json_paths: list[str]
  png_paths: list[str]
  record: dict


def check_settings(*, num_frames: int, num_samples: int, temperature: float,
                   duration_temperature: float, top_p: float, max_polyphony: int,
                   prime_frames: int, tempo_bpm: float, velocity: int) -> None:
  """Raises ValueError naming the flag to change when a setting is out of range."""

  def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"--{name} must be a positive integer, got {value!r}")

  def positive_finite(name, value):
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
      raise ValueError(f"--{name} must be a positive finite number, got {value!r}")

  positive_int("num_frames", num_frames)
  positive_int("num_samples", num_samples)
  positive_int("prime_frames", prime_frames)
  positive_finite("temperature", temperature)
  positive_finite("duration_temperature", duration_temperature)
  positive_finite("tempo_bpm", tempo_bpm)
  if not (isinstance(top_p, (int, float, np.number)) and 0.0 < top_p <= 1.0):
    raise ValueError(f"--top_p must be in (0, 1] (1 = off), got {top_p!r}")
  if isinstance(max_polyphony, bool) or not isinstance(max_polyphony, (int, np.integer)) \
      or max_polyphony < 0:
    raise ValueError(f"--max_polyphony must be a non-negative integer (0 = no limit), got "
                     f"{max_polyphony!r}")
  if isinstance(velocity, bool) or not isinstance(velocity, (int, np.integer)) \
      or not 1 <= velocity <= 127:
    raise ValueError(f"--velocity must be an integer in 1..127, got {velocity!r}")


def check_prime_fits(model_cfg: ModelConfig, prime_frames: int) -> None:
  """A transformer or bilstm sees at most cfg.seq_len frames; the prime must fit."""
  if model_cfg.model in WINDOWED_MODELS and prime_frames > model_cfg.seq_len:
    raise ValueError(
        f"--prime_frames={prime_frames} exceeds the {model_cfg.model}'s context of "
        f"{model_cfg.seq_len} frames (its seq_len); use --prime_frames <= {model_cfg.seq_len}")


def find_checkpoint_steps(workdir: str, step: int | None = None) -> list[int]:
  """The checkpoint steps in W; raises FileNotFoundError when there is none (or not `step`)."""
  # Orbax names each finished checkpoint's folder by its step (unfinished ones carry a
  # temporary suffix). Listing them needs no CheckpointManager, which would log.
  directory = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR)
  steps = []
  if os.path.isdir(directory):
    steps = sorted(int(name) for name in os.listdir(directory)
                   if name.isdigit() and os.path.isdir(os.path.join(directory, name)))
  if not steps:
    raise FileNotFoundError(f"{workdir} has no checkpoint in {ckpt_lib.CHECKPOINT_DIR}/; train "
                            "there first or check --workdir")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"{workdir} has no checkpoint for --step={step}; available: "
                            f"{', '.join(map(str, steps))}")
  return steps


def load_prime(config, prime_frames: int, *, prime_midi: str | None = None,
               prime_split: str | None = None, prime_piece: int | None = None,
               dataset: Any = None) -> Prime:
  """The first `prime_frames` frames of a MIDI file or of a held-out piece.

  Args:
    config: the run's `RunConfig`; its data settings (steps_per_quarter,
      duration_mode, include_drums) encode the MIDI file, and its data config loads
      the dataset when `dataset` is None.
    prime_frames: N >= 1.
    prime_midi: a MIDI file; excludes prime_split and prime_piece.
    prime_split: "valid" or "test" (default "test").
    prime_piece: index into the split's pieces, sorted by name (default 0).
    dataset: an already loaded Dataset, or any mapping split -> list of Piece.

  Returns:
    A `Prime` with frames float32[prime_frames, 107].

  Raises:
    FileNotFoundError: the MIDI file does not exist.
    MidiError: the MIDI file is unreadable (a ValueError).
    ValueError: the source has fewer than N frames, or a bad split or index.
  """
  data = config.data
  if prime_midi is not None:
    if prime_split is not None or prime_piece is not None:
      raise ValueError("give either --prime_midi or --prime_split/--prime_piece, not both")
    if not os.path.isfile(prime_midi):
      raise FileNotFoundError(f"--prime_midi={prime_midi} does not exist; give a MIDI file")
    try:
      frames = midi_to_frames(prime_midi, steps_per_quarter=data.steps_per_quarter,
                              duration_mode=data.duration_mode,
                              include_drums=data.include_drums)
    except MidiError as e:
      raise MidiError(f"{e}; give a readable MIDI file as --prime_midi") from e
    source = {"kind": "midi", "path": os.path.abspath(prime_midi)}
    what = f"--prime_midi={prime_midi}"
  else:
    split = DEFAULT_PRIME_SPLIT if prime_split is None else prime_split
    index = 0 if prime_piece is None else prime_piece
    if split not in HELD_OUT_SPLITS:
      raise ValueError(f"--prime_split must be one of {', '.join(HELD_OUT_SPLITS)}, got "
                       f"{split!r}")
    if dataset is None:
      from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
      dataset = load_dataset(data)
    pieces = dataset[split]
    if not pieces:
      raise ValueError(f"the {split} split is empty; use --prime_midi or another "
                       "--prime_split")
    if not 0 <= index < len(pieces):
      raise ValueError(f"--prime_piece={index} is out of range: the {split} split has "
                       f"{len(pieces)} pieces; use 0..{len(pieces) - 1} or --prime_midi")
    piece = pieces[index]
    frames = np.asarray(piece.frames, np.float32)
    source = {"kind": "dataset", "split": split, "piece_index": index,
              "piece_name": piece.name}
    what = f"piece {index} ({piece.name}) of the {split} split"
  if frames.shape[0] < prime_frames:
    raise ValueError(f"{what} has {frames.shape[0]} frames, fewer than --prime_frames="
                     f"{prime_frames}; lower --prime_frames or choose another prime")
  source["frames"] = prime_frames
  return Prime(frames=np.array(frames[:prime_frames], np.float32), source=source)


@functools.lru_cache(maxsize=8)
def model_sampler(model_cfg: ModelConfig, settings: sampling.SampleSettings):
  """A jitted `sampler(carry, prime, rng, params) -> float32[batch, P + N, 107]`.

  One compiled program per (config, settings, shapes): the prime is consumed and the
  N frames generated by `sampling.generate`'s `lax.scan`s over `decode_step`; the
  parameters are an argument, not a compiled-in constant.
  """

  def step_fn(frame, carry, params):
    return decode_step(model_cfg, params, frame, carry)

  return sampling.make_sampler(step_fn, settings)


def sample_frames(model_cfg: ModelConfig, params, prime: np.ndarray,
                  settings: sampling.SampleSettings, num_samples: int,
                  seed: int) -> tuple[np.ndarray, dict]:
  """Generates `num_samples` continuations of one prime in one batch.

  Args:
    model_cfg: the model config.
    params: the model's parameters.
    prime: float32[P, 107], the frames every sample starts with.
    settings: how to sample (settings.num_frames frames after the prime).
    num_samples: batch size B.
    seed: PRNG seed; the same seed, settings and inputs give identical frames.

  Returns:
    (float32[B, P + N, 107], timing {"compile_seconds", "sample_seconds",
    "frames_per_s"}), frames/s counting generated frames of all samples over the
    compiled call alone (prime consumption included, compilation excluded).
  """
  prime = np.asarray(prime, np.float32)
  if prime.ndim != 2 or prime.shape[1] != FRAME_DIM:
    raise ValueError(f"prime must be float32[P, {FRAME_DIM}], got shape {prime.shape}")
  batch_prime = jnp.broadcast_to(jnp.asarray(prime), (num_samples,) + prime.shape)
  carry = init_carry(model_cfg, num_samples)
  rng = jax.random.key(seed)
  sampler = model_sampler(model_cfg, settings)
  start = time.perf_counter()
  compiled = sampler.lower(carry, batch_prime, rng, params).compile()
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  frames = compiled(carry, batch_prime, rng, params)
  frames = np.asarray(jax.block_until_ready(frames))
  seconds = time.perf_counter() - start
  timing = {"compile_seconds": round(compile_seconds, 4), "sample_seconds": round(seconds, 4),
            "frames_per_s": round(settings.num_frames * num_samples / max(seconds, 1e-9), 1)}
  return frames, timing


def sample_workdir(workdir: str,
                   out_dir: str,
                   *,
                   num_frames: int = 512,
                   num_samples: int = 4,
                   temperature: float = 1.0,
                   duration_temperature: float = 1.0,
                   top_p: float = 1.0,
                   max_polyphony: int = 0,
                   seed: int = 0,
                   step: int | None = None,
                   prime_midi: str | None = None,
                   prime_frames: int = 10,
                   prime_split: str | None = None,
                   prime_piece: int | None = None,
                   tempo_bpm: float = 120.0,
                   velocity: int = 80,
                   plot: bool = True,
                   dataset: Any = None) -> SampleResult:
  """Samples a trained run to MIDI: O/sample_000.mid (+ .json, + .png), ...

  Every input is checked before the model is loaded or compiled.

  Args:
    workdir: W, a training workdir (config.json, checkpoints/).
    out_dir: O, created when missing.
    num_frames: N, frames generated after the prime.
    num_samples: samples, generated in one batch.
    temperature: note temperature (> 0).
    duration_temperature: duration temperature (> 0).
    top_p: nucleus mass for durations, in (0, 1]; 1 = off.
    max_polyphony: at most this many notes per frame; 0 = no limit.
    seed: PRNG seed; the same seed and settings give identical MIDI.
    step: checkpoint step; None = the best by validation NLL (else the latest).
    prime_midi: prime from this MIDI file (encoded with the run's data settings).
    prime_frames: prime length P >= 1; at most seq_len for transformer and bilstm.
    prime_split: prime from a held-out piece of "valid" or "test" (the default).
    prime_piece: which piece of the split (default 0).
    tempo_bpm: tempo written into the MIDI files.
    velocity: note velocity in the MIDI files, 1..127.
    plot: write piano-roll PNGs when matplotlib is installed.
    dataset: a loaded Dataset (or split -> pieces mapping) for the held-out prime;
      loaded from the run's data config (cached) when None.

  Returns:
    A `SampleResult`.

  Raises:
    FileNotFoundError: no workdir, config.json, checkpoint (or --step), or prime file.
    ValueError: a bad setting, an unreadable (MidiError) or too short prime, a prime
      longer than the model's context, an out_dir that cannot be written.
  """
  from musicgen_jax import train as train_lib  # pylint: disable=g-import-not-at-top

  check_settings(num_frames=num_frames, num_samples=num_samples, temperature=temperature,
                 duration_temperature=duration_temperature, top_p=top_p,
                 max_polyphony=max_polyphony, prime_frames=prime_frames,
                 tempo_bpm=tempo_bpm, velocity=velocity)
  if not workdir or not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir={workdir} does not exist; give a training workdir")
  config = train_lib.load_run_config(workdir)
  model_cfg, data_cfg = config.model, config.data
  find_checkpoint_steps(workdir, step)
  check_prime_fits(model_cfg, prime_frames)
  settings = sampling.SampleSettings.from_model_config(
      model_cfg, num_frames=num_frames, temperature=float(temperature),
      duration_temperature=float(duration_temperature), top_p=float(top_p),
      max_polyphony=int(max_polyphony))
  ckpt_lib.ensure_writable_dir(out_dir, "out_dir")
  prime = load_prime(config, prime_frames, prime_midi=prime_midi, prime_split=prime_split,
                     prime_piece=prime_piece, dataset=dataset)

  params, restored_step = train_lib.load_params(workdir, config, step=step)
  logging.info("%s from %s, checkpoint %d; prime: %d frames of %s", model_cfg.model, workdir,
               restored_step, prime_frames, prime.source.get("path") or
               f"{prime.source['split']} piece {prime.source['piece_index']}")
  frames, timing = sample_frames(model_cfg, params, prime.frames, settings, num_samples, seed)
  logging.info("sampled %d x %d frames: %.0f frames/s (%.3f s; compile %.2f s, not counted)",
               num_samples, num_frames, timing["frames_per_s"], timing["sample_seconds"],
               timing["compile_seconds"])

  record = {
      "workdir": os.path.abspath(workdir),
      "checkpoint_step": int(restored_step),
      "requested_step": step,
      "model": dataclasses.asdict(model_cfg),
      "steps_per_quarter": data_cfg.steps_per_quarter,
      "duration_mode": data_cfg.duration_mode,
      "num_frames": num_frames,
      "num_samples": num_samples,
      "temperature": float(temperature),
      "duration_temperature": float(duration_temperature),
      "top_p": float(top_p),
      "max_polyphony": int(max_polyphony),
      "seed": int(seed),
      "tempo_bpm": float(tempo_bpm),
      "velocity": int(velocity),
      "prime": prime.source,
      "prime_frames": prime_frames,
      **timing,
      "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
      "jax_version": jax.__version__,
  }
  draw = plot and plotting.available()
  if plot and not draw:
    logging.info("matplotlib is not installed; skipping piano-roll PNGs (pip install "
                 "musicgen-jax[plot])")
  midi_paths, json_paths, png_paths = [], [], []
  for i in range(num_samples):
    midi_path = os.path.join(out_dir, MIDI_NAME.format(i))
    frames_to_midi(frames[i], tempo_bpm=tempo_bpm, velocity=velocity,
                   steps_per_quarter=data_cfg.steps_per_quarter,
                   duration_mode=data_cfg.duration_mode).save(midi_path)
    midi_paths.append(midi_path)
    png_name = None
    if draw:
      png_name = PNG_NAME.format(i)
      title = (f"{model_cfg.model} step {restored_step}, sample {i}: T={temperature:g}, "
               f"seed {seed}, prime {prime_frames} frames")
      plotting.piano_roll(frames[i], os.path.join(out_dir, png_name), title=title,
                          prime_frames=prime_frames,
                          steps_per_quarter=data_cfg.steps_per_quarter,
                          duration_mode=data_cfg.duration_mode)
      png_paths.append(os.path.join(out_dir, png_name))
    sample_record = dict(record, sample_index=i, midi=os.path.basename(midi_path),
                         png=png_name, num_notes=int(frames[i, :, :NUM_NOTES].sum()),
                         length_quarters=float(frames[i, :, DURATION_INDEX].sum()))
    json_path = os.path.join(out_dir, JSON_NAME.format(i))
    with open(json_path, "w") as f:
      json.dump(sample_record, f, indent=2)
      f.write("\n")
    json_paths.append(json_path)
  logging.info("wrote %d samples to %s", num_samples, out_dir)
  return SampleResult(frames=frames, midi_paths=midi_paths, json_paths=json_paths,
                      png_paths=png_paths, record=record)


# The command line -----------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The sampling flags, each with help text; the model comes from W/config.json."""
  flags.DEFINE_string("workdir", None, "Training workdir holding config.json and checkpoints/.")
  flags.DEFINE_string("out_dir", None, "Folder for sample_000.mid, .json and .png, ...")
  flags.DEFINE_integer("num_frames", 512, "Frames to generate after the prime.")
  flags.DEFINE_integer("num_samples", 4, "Samples, generated together in one batch.")
  flags.DEFINE_float("temperature", 1.0, "Note temperature: Bernoulli(sigmoid(logit / T)).")
  flags.DEFINE_float("duration_temperature", 1.0, "Duration temperature (categorical logits "
                     "/ T; regression: the spread times T).")
  flags.DEFINE_float("top_p", 1.0, "Nucleus mass over duration classes; 1 = off.")
  flags.DEFINE_integer("max_polyphony", 0, "Keep at most this many (most probable) sampled "
                       "notes per frame; 0 = no limit.")
  flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed and settings give identical "
                       "MIDI.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the best by validation NLL, "
                       "else the latest).")
  flags.DEFINE_string("prime_midi", None, "Prime with the first --prime_frames frames of this "
                      "MIDI file (encoded with the run's data settings).")
  flags.DEFINE_integer("prime_frames", 10, "Prime length in frames (at most seq_len for "
                       "transformer and bilstm).")
  flags.DEFINE_enum("prime_split", None, list(HELD_OUT_SPLITS), "Without --prime_midi: prime "
                    f"from a held-out piece of this split (default {DEFAULT_PRIME_SPLIT}).")
  flags.DEFINE_integer("prime_piece", None, "Without --prime_midi: index of the held-out "
                       "piece, in name order (default 0).")
  flags.DEFINE_float("tempo_bpm", 120.0, "Tempo written into the MIDI files.")
  flags.DEFINE_integer("velocity", 80, "Note velocity in the MIDI files (1..127).")
  flags.DEFINE_bool("plot", True, "Write a piano-roll PNG beside each sample when matplotlib "
                    "is installed.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
  for name in ("workdir", "out_dir"):
    if not FLAGS[name].value:
      sys.exit(f"error: --{name} is required")
  try:
    result = sample_workdir(
        FLAGS.workdir, FLAGS.out_dir, num_frames=FLAGS.num_frames,
        num_samples=FLAGS.num_samples, temperature=FLAGS.temperature,
        duration_temperature=FLAGS.duration_temperature, top_p=FLAGS.top_p,
        max_polyphony=FLAGS.max_polyphony, seed=FLAGS.seed, step=FLAGS.step,
        prime_midi=FLAGS.prime_midi, prime_frames=FLAGS.prime_frames,
        prime_split=FLAGS.prime_split, prime_piece=FLAGS.prime_piece,
        tempo_bpm=FLAGS.tempo_bpm, velocity=FLAGS.velocity, plot=FLAGS.plot)
  except (ValueError, OSError, RuntimeError) as e:  # MidiError, CheckpointError included
    sys.exit("error: " + " ".join(str(e).split()))
  print(json.dumps({"out_dir": os.path.abspath(FLAGS.out_dir),
                    "midi": [os.path.basename(p) for p in result.midi_paths],
                    "checkpoint_step": result.record["checkpoint_step"],
                    "frames_per_s": result.record["frames_per_s"]}))


def run():
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()

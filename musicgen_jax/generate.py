"""Music from a trained run: prime it, sample a batch in one compiled call, write files.

    result = sample_workdir("runs/lstm", "out", num_frames=512, num_samples=4,
                            prime_midi="chpn_op53.mid", prime_frames=10)

Reads W/config.json (so no model flags) and the best-by-validation checkpoint (or
--step). The prime is the first `prime_frames` frames of `prime_midi`, encoded with the
run's own data settings, else of a held-out piece (`prime_split`, `prime_piece`; the test
split's first piece by default). Every sample starts with the same prime; all samples are
generated in one batch by one compiled `lax.scan` (`sampling.make_sampler` over
`models.decode_step`). Writes O/sample_000.mid, ..., a JSON of every setting beside each
and, when matplotlib is installed, a piano roll (sample_000.png). Every input is checked
before the model is loaded or compiled.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from musicgen_jax import audio as audio_lib
from musicgen_jax import midi as midi_lib
from musicgen_jax import models, plotting, sampling
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.config import RunConfig
from musicgen_jax.encoding import (DURATION_INDEX, LOWEST_PITCH, NUM_NOTES,
                                   MidiError, frames_to_midi)
from musicgen_jax.models import STATE, ModelConfig, decode_step, init_carry
from musicgen_jax.models.heads import frame_width
from musicgen_jax.settings import Settings, in_range, non_negative, positive, setting

HELD_OUT_SPLITS = ("valid", "test")
DEFAULT_PRIME_SPLIT = "test"
SAMPLE_STEM = "sample_{:03d}"
OUTPUT_PATTERNS = ("sample_*.mid", "sample_*.json", "sample_*.png", "sample_*.ogg",
                   "sample_*.wav", "sample_*.flac")
AUDIO_CHOICES = ("ogg", "wav", "flac", "none")


@dataclasses.dataclass(frozen=True)
class GenerateConfig(Settings):
  """What to generate from a run, and how to write it (beside `SampleSettings`)."""

  num_samples: int = setting(4, "Samples, generated together in one batch.", check=positive)
  seed: int = setting(0, "Sampling seed; the same seed and settings give identical MIDI.")
  step: int | None = setting(None, "Checkpoint step (default: the best by validation NLL, "
                             "else the latest).")
  prime_midi: str | None = setting(None, "Prime with the first --prime_frames frames of this "
                                   "MIDI file (encoded with the run's data settings).")
  prime_frames: int = setting(10, "Prime length in frames (at most the context of models "
                              "with a finite one).", check=positive)
  prime_split: str | None = setting(None, "Without --prime_midi: prime from a held-out piece "
                                    f"of this split (default {DEFAULT_PRIME_SPLIT}).",
                                    choices=HELD_OUT_SPLITS)
  prime_piece: int | None = setting(None, "Without --prime_midi: index of the held-out piece, "
                                    "in name order (default 0).", check=non_negative)
  tempo_bpm: float | None = setting(None, "Tempo written into the MIDI files (default: the "
                                    "prime's own tempo; 120 bpm where it has none).",
                                    check=positive)
  velocity: int = setting(80, "Note velocity in the MIDI files (1..127) of models without "
                          "dynamics (with --velocity_bins, each onset plays its own).",
                          check=in_range(1, 127))
  plot: bool = setting(True, "Write a piano-roll PNG beside each sample when matplotlib is "
                       "installed.")
  all_pitches: bool = setting(False, "Sample any pitch 21..126; by default only the range "
                              "the model was trained on (saved with it) can sound.")
  audio: str | None = setting(None, "Audio beside each MIDI file: ogg, wav, flac or none "
                              "(default: ogg when the audio extra is installed).",
                              choices=AUDIO_CHOICES)
  soundfont: str | None = setting(None, "SoundFont (.sf2/.sf3) for the audio (default: an "
                                  "installed General MIDI one).")
  reference: str | None = setting(None, "Judge the samples (their frames after the prime) "
                                  "against real music: 'valid' or 'test' (that split of the "
                                  "run's dataset, with the training split's floor beside) or a "
                                  "folder of MIDI; writes O/judge.json. Needs the judge extra.")

  def __post_init__(self):
    super().__post_init__()
    if self.prime_midi is not None and (self.prime_split is not None or
                                        self.prime_piece is not None):
      raise ValueError("give either --prime_midi or --prime_split/--prime_piece, not both")


@dataclasses.dataclass(frozen=True)
class Prime:
  """The frames every sample starts with, and where they came from.

  frames: float32[prime_frames, F] (F: the model's frame width, `FrameLayout`).
  source: JSON-able description: {"kind": "midi", "path": ...} or
    {"kind": "dataset", "split": ..., "piece_index": ..., "piece_name": ...}.
  tempo_bpm, time_signature: the source's (what the samples are written with by default).
  """

  frames: np.ndarray
  source: dict
  tempo_bpm: float = midi_lib.DEFAULT_TEMPO_BPM
  time_signature: str = midi_lib.DEFAULT_TIME_SIGNATURE


@dataclasses.dataclass(frozen=True)
class SampleResult:
  """What `sample_workdir` wrote and measured.

  frames: float32[num_samples, prime_frames + num_frames, F], the prime first.
  midi_paths, json_paths: one per sample; png_paths, audio_paths: one per sample, or
    empty (no matplotlib / no audio). page_path: O/index.html, to listen in a browser.
  record: the settings and measurements shared by every sample's JSON.
  """

  frames: np.ndarray
  midi_paths: list[str]
  json_paths: list[str]
  png_paths: list[str]
  record: dict
  audio_paths: list[str] = dataclasses.field(default_factory=list)
  page_path: str | None = None  # O/index.html: every sample's piano roll and player
  judge: dict | None = None  # with --reference: `judge.judge`'s result, also in O/judge.json


def check_prime_fits(model_cfg: ModelConfig, prime_frames: int) -> None:
  """A model with a finite context cannot read a longer prime: that is an error."""
  context = models.context(model_cfg)
  if context.kind != STATE and prime_frames > context.frames:
    raise ValueError(
        f"--prime_frames={prime_frames} exceeds the {model_cfg.model}'s context of "
        f"{context.frames} frames; use --prime_frames <= {context.frames}")


def _prime_from_midi(config: RunConfig, path: str) -> tuple[np.ndarray, dict, str, tuple]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--prime_midi={path} does not exist; give a MIDI file")
  from musicgen_jax.data import encode_file  # pylint: disable=g-import-not-at-top
  try:
    frames, stats = encode_file(config.data, path)
  except MidiError as e:
    raise MidiError(f"{e}; give a readable MIDI file as --prime_midi") from e
  return (frames, {"kind": "midi", "path": os.path.abspath(path)}, f"--prime_midi={path}",
          (stats.tempo_bpm, stats.time_signature))


def _prime_from_dataset(config: RunConfig, split: str | None, index: int | None,
                        dataset: Any) -> tuple[np.ndarray, dict, str, tuple]:
  split = DEFAULT_PRIME_SPLIT if split is None else split
  index = 0 if index is None else index
  if dataset is None:
    from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
    dataset = load_dataset(config.data)
  pieces = dataset[split]
  if not pieces:
    raise ValueError(f"the {split} split is empty; use --prime_midi or another --prime_split")
  if index >= len(pieces):
    raise ValueError(f"--prime_piece={index} is out of range: the {split} split has "
                     f"{len(pieces)} pieces; use 0..{len(pieces) - 1} or --prime_midi")
  piece = pieces[index]
  source = {"kind": "dataset", "split": split, "piece_index": index, "piece_name": piece.name}
  return (np.asarray(piece.frames, np.float32), source,
          f"piece {index} ({piece.name}) of the {split} split",
          (getattr(piece, "tempo_bpm", midi_lib.DEFAULT_TEMPO_BPM),
           getattr(piece, "time_signature", midi_lib.DEFAULT_TIME_SIGNATURE)))


def load_prime(config: RunConfig, job: GenerateConfig, dataset: Any = None) -> Prime:
  """The first `job.prime_frames` frames of `job.prime_midi` or of a held-out piece.

  Raises:
    FileNotFoundError: the MIDI file does not exist.
    MidiError: the MIDI file is unreadable (a ValueError).
    ValueError: the source has fewer than prime_frames frames, or a bad split or index.
  """
  if job.prime_midi is not None:
    frames, source, what, meter = _prime_from_midi(config, job.prime_midi)
  else:
    frames, source, what, meter = _prime_from_dataset(config, job.prime_split, job.prime_piece,
                                                      dataset)
  if frames.shape[0] < job.prime_frames:
    raise ValueError(f"{what} has {frames.shape[0]} frames, fewer than --prime_frames="
                     f"{job.prime_frames}; lower --prime_frames or choose another prime")
  source["frames"] = job.prime_frames
  return Prime(frames=np.array(frames[:job.prime_frames], np.float32), source=source,
               tempo_bpm=float(meter[0]), time_signature=str(meter[1]))


@functools.lru_cache(maxsize=8)
def model_sampler(model_cfg: ModelConfig, settings: sampling.SampleSettings):
  """A jitted `sampler(carry, prime, rng, allowed, params) -> float32[batch, P + N, F]`."""

  def step_fn(frame, carry, params):
    return decode_step(model_cfg, params, frame, carry)

  return sampling.make_sampler(step_fn, settings)


def sample_frames(model_cfg: ModelConfig, params, prime: np.ndarray,
                  settings: sampling.SampleSettings, num_samples: int, seed: int,
                  allowed: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
  """Generates `num_samples` continuations of one prime float32[P, F] in one batch.

  Returns:
    (float32[B, P + N, F], timing {"compile_seconds", "sample_seconds",
    "frames_per_s"}), frames/s counting generated frames of all samples over the
    compiled call alone (prime consumption included, compilation excluded).
  """
  prime = np.asarray(prime, np.float32)
  width = frame_width(model_cfg)
  if prime.ndim != 2 or prime.shape[1] != width:
    raise ValueError(f"prime must be float32[P, {width}], got shape {prime.shape}")
  batch_prime = jnp.broadcast_to(jnp.asarray(prime), (num_samples,) + prime.shape)
  carry = init_carry(model_cfg, num_samples)
  rng = jax.random.key(seed)
  start = time.perf_counter()
  compiled = model_sampler(model_cfg, settings).lower(carry, batch_prime, rng, allowed,
                                                      params).compile()
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  frames = np.asarray(jax.block_until_ready(compiled(carry, batch_prime, rng, allowed, params)))
  seconds = time.perf_counter() - start
  timing = {"compile_seconds": round(compile_seconds, 4), "sample_seconds": round(seconds, 4),
            "frames_per_s": round(settings.num_frames * num_samples / max(seconds, 1e-9), 1)}
  return frames, timing


class SamplerCache:
  """Compiled samplers kept across calls (for a server answering request after request).

  One program per model config, number of frames, polyphony cap, batch and prime length
  (`sampling.make_tunable_sampler`): the temperatures and top-p are arguments, so changing
  them does not compile again, and the parameters are arguments too, so two runs of one
  config share a program. Holds at most `max_size` programs, the least recently used
  dropped first. Not thread-safe: callers serialise their requests.
  """

  def __init__(self, max_size: int = 8):
    self.max_size = max_size
    self._programs: dict = {}
    self.compiles = 0

  def sample(self, model_cfg: ModelConfig, params, prime: np.ndarray,
             settings: sampling.SampleSettings, num_samples: int, seed: int,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """`sample_frames`, compiling only for a program not seen before; timing adds
    "compiled" (whether this call compiled)."""
    prime = np.asarray(prime, np.float32)
    width = frame_width(model_cfg)
    if prime.ndim != 2 or prime.shape[1] != width:
      raise ValueError(f"prime must be float32[P, {width}], got shape {prime.shape}")
    batch_prime = jnp.broadcast_to(jnp.asarray(prime), (num_samples,) + prime.shape)
    carry = init_carry(model_cfg, num_samples)
    rng = jax.random.key(seed)
    allowed = None if allowed is None else jnp.asarray(allowed)
    tuned = sampling.tunable_values(settings)
    key = (model_cfg, sampling.program_settings(settings), num_samples, prime.shape,
           allowed is None)
    start = time.perf_counter()
    program = self._programs.pop(key, None)
    compiled = program is None
    if compiled:
      step_fn = lambda frame, carry, params: decode_step(model_cfg, params, frame, carry)
      program = sampling.make_tunable_sampler(step_fn, settings).lower(
          carry, batch_prime, rng, allowed, tuned, params).compile()
      self.compiles += 1
    self._programs[key] = program  # the most recently used last
    while len(self._programs) > self.max_size:
      self._programs.pop(next(iter(self._programs)))
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    frames = np.asarray(jax.block_until_ready(program(carry, batch_prime, rng, allowed, tuned,
                                                      params)))
    seconds = time.perf_counter() - start
    return frames, {"compile_seconds": round(compile_seconds, 4) if compiled else 0.0,
                    "sample_seconds": round(seconds, 4), "compiled": compiled,
                    "frames_per_s": round(settings.num_frames * num_samples /
                                          max(seconds, 1e-9), 1)}


def _earlier_samples(out_dir: str) -> list[str]:
  return sorted(p for pattern in OUTPUT_PATTERNS for p in glob.glob(os.path.join(out_dir, pattern)))


def check_out_dir(out_dir: str, overwrite: bool = False) -> None:
  """Fails unless O can be written and holds no earlier samples (or `overwrite`); writes
  nothing."""
  workdir_lib.check_writable_dir(out_dir, "out_dir")
  old = _earlier_samples(out_dir)
  if old and not overwrite:
    raise ValueError(f"--out_dir={out_dir} already holds {len(old)} sample files; choose an "
                     "empty folder or pass --overwrite to replace them")


def prepare_out_dir(out_dir: str, overwrite: bool = False) -> None:
  """Creates O; refuses earlier samples there unless `overwrite`, which removes them first."""
  check_out_dir(out_dir, overwrite)
  workdir_lib.ensure_writable_dir(out_dir, "out_dir")
  for path in _earlier_samples(out_dir):
    os.remove(path)


def sample_record(run_dir: str, config: RunConfig, step: int, settings, job, prime: Prime,
            timing: dict) -> dict:
  device = jax.devices()[0]
  return {
      "workdir": os.path.abspath(run_dir), "checkpoint_step": int(step),
      "requested_step": job.step, "model": dataclasses.asdict(config.model),
      "steps_per_quarter": config.data.steps_per_quarter,
      "duration_mode": config.data.duration_mode,
      **dataclasses.asdict(settings), **{k: v for k, v in dataclasses.asdict(job).items()
                                         if k not in ("step", "prime_midi", "plot",
                                                      "tempo_bpm", "soundfont",
                                                      "reference")},
      "prime": prime.source, "tempo_bpm": tempo_of(job, prime),
      "time_signature": prime.time_signature, **timing,
      "device": f"{device.platform}:{device.device_kind}", "jax_version": jax.__version__,
  }


def tempo_of(job: GenerateConfig, prime: Prime) -> float:
  """--tempo_bpm when given, else the prime's own tempo."""
  return float(job.tempo_bpm) if job.tempo_bpm is not None else prime.tempo_bpm


def allowed_pitches(model_cfg: ModelConfig, job: GenerateConfig) -> np.ndarray | None:
  """bool[106]: the pitches the model was trained on (saved with it), unless --all_pitches."""
  if job.all_pitches or not model_cfg.pitch_high:
    return None
  allowed = np.zeros(NUM_NOTES, bool)
  allowed[model_cfg.pitch_low - LOWEST_PITCH:model_cfg.pitch_high - LOWEST_PITCH + 1] = True
  return allowed


def audio_format(job: GenerateConfig) -> str | None:
  """The audio extension to write ('ogg', ...), or None; checked before any work."""
  if job.audio == "none" or (job.audio is None and not audio_lib.available()):
    if job.audio is None:
      logging.info("the audio extra is not installed; writing no audio (%s)",
                   audio_lib.INSTALL_HINT)
    return None
  if not audio_lib.available():
    raise audio_lib.AudioError(f"--audio={job.audio} needs {audio_lib.INSTALL_HINT}")
  audio_lib.find_soundfont(job.soundfont)  # fails now, not after sampling
  return job.audio or "ogg"


def _write_one(sample: np.ndarray, stem: str, record: dict, config: RunConfig,
               job: GenerateConfig, draw: bool, audio: str | None) -> dict:
  """sample_NNN.mid (+ .png, + audio) and its JSON; returns the JSON record."""
  spq = config.data.steps_per_quarter
  frames_to_midi(sample, tempo_bpm=record["tempo_bpm"], velocity=job.velocity,
                 steps_per_quarter=spq, time_signature=record["time_signature"]
                 ).save(stem + ".mid")
  name = os.path.basename(stem)
  if draw:
    title = (f"{config.model.model} step {record['checkpoint_step']}, {name}: "
             f"T={record['temperature']:g}, seed {job.seed}, prime {job.prime_frames} frames")
    plotting.piano_roll(sample, stem + ".png", title=title, prime_frames=job.prime_frames,
                        steps_per_quarter=spq)
  if audio:
    audio_lib.render_midi(stem + ".mid", f"{stem}.{audio}", soundfont=job.soundfont)
  return dict(record, midi=name + ".mid", png=name + ".png" if draw else None,
              audio=f"{name}.{audio}" if audio else None,
              num_notes=int(sample[:, :NUM_NOTES].sum()),
              length_quarters=float(sample[:, DURATION_INDEX].sum()))


def write_samples(frames: np.ndarray, out_dir: str, record: dict, config: RunConfig,
                  job: GenerateConfig, audio: str | None = None) -> SampleResult:
  """O/sample_NNN.mid, .json, and (when their extras are installed) .png and audio."""
  draw = job.plot and plotting.available()
  if job.plot and not draw:
    logging.info("matplotlib is not installed; skipping piano-roll PNGs (pip install "
                 "musicgen-jax[plot])")
  stems = [os.path.join(out_dir, SAMPLE_STEM.format(i)) for i in range(len(frames))]
  for i, (sample, stem) in enumerate(zip(frames, stems)):
    sample_record = dict(_write_one(sample, stem, record, config, job, draw, audio),
                         sample_index=i)
    with open(stem + ".json", "w") as f:
      json.dump(sample_record, f, indent=2)
      f.write("\n")
  from musicgen_jax import pages  # pylint: disable=g-import-not-at-top
  page = pages.write(out_dir, pages.samples_page(out_dir))
  return SampleResult(frames=frames, midi_paths=[s + ".mid" for s in stems],
                      json_paths=[s + ".json" for s in stems],
                      png_paths=[s + ".png" for s in stems] if draw else [], record=record,
                      audio_paths=[f"{s}.{audio}" for s in stems] if audio else [],
                      page_path=page)


def split_options(options: dict) -> tuple[sampling.SampleSettings, GenerateConfig]:
  """Keyword options -> (SampleSettings, GenerateConfig); an unknown one is a TypeError."""
  names = {f.name for f in dataclasses.fields(sampling.SampleSettings)}
  job_names = {f.name for f in dataclasses.fields(GenerateConfig)}
  unknown = sorted(set(options) - names - job_names)
  if unknown:
    raise TypeError(f"unknown sampling options: {', '.join(unknown)}")
  return (sampling.SampleSettings(**{k: v for k, v in options.items() if k in names}),
          GenerateConfig(**{k: v for k, v in options.items() if k in job_names}))


def sample_workdir(run_dir: str, out_dir: str, *, dataset: Any = None, overwrite: bool = False,
                   **options) -> SampleResult:
  """Samples a trained run to O/sample_000.mid (+ .json, + .png, + audio), ...

  Args:
    run_dir: W, a training workdir (config.json, checkpoints/).
    out_dir: O, created when missing; earlier samples there need `overwrite`.
    dataset: a loaded Dataset (or split -> pieces mapping) for a held-out prime;
      loaded from the run's data config (cached) when None.
    overwrite: remove earlier samples in O first.
    **options: fields of `sampling.SampleSettings` and `GenerateConfig`.

  Raises:
    FileNotFoundError: no workdir, config.json, checkpoint (or step), or prime file.
    ValueError: a bad setting, an unreadable (MidiError) or too short prime, a prime
      longer than the model's context, an out_dir that cannot be written.
  """
  settings, job = split_options(options)
  config = workdir_lib.load_config(run_dir)
  workdir_lib.check_step(run_dir, job.step)
  return _sample(config, lambda: workdir_lib.load_run(run_dir, job.step), out_dir, settings,
                 job, dataset, overwrite)


def sample_pretrained(name: str, out_dir: str, *, overwrite: bool = False,
                      **options) -> SampleResult:
  """Samples a model shipped in the package (`pretrained.names()`); its prime.mid by default,
  and the sampling settings the judge chose for it (`pretrained.sampling_defaults`) unless
  options give them."""
  from musicgen_jax import pretrained  # pylint: disable=g-import-not-at-top
  settings, job = split_options(dict(pretrained.sampling_defaults(name), **options))
  if job.step is not None:
    raise ValueError("--step does not apply to a pretrained model")
  if job.prime_midi is None and job.prime_split is None and job.prime_piece is None:
    job = dataclasses.replace(job, prime_midi=pretrained.prime_path(name))
  elif job.prime_midi is None:
    raise ValueError("a pretrained model has no dataset to prime from: use --prime_midi")
  config = RunConfig.load(pretrained.model_dir(name))
  return _sample(config, lambda: pretrained.load(name), out_dir, settings, job, None,
                 overwrite)


def _judge_reference(config: RunConfig, settings, job: GenerateConfig, dataset: Any):
  """(the real sets the samples will be judged against, the dataset), checked before any
  sampling; a held-out split's dataset is loaded here (once: the prime uses it too)."""
  from musicgen_jax import judge  # pylint: disable=g-import-not-at-top
  judge.require_sklearn()
  length = judge.excerpt_length(settings.num_frames)
  judge.check_enough(job.num_samples * (settings.num_frames // length), length,
                     f"--num_samples={job.num_samples} x --num_frames={settings.num_frames}",
                     hint=judge.SAMPLES_HINT)
  if dataset is None and job.reference in HELD_OUT_SPLITS:
    from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
    dataset = load_dataset(config.data)
  real, floor, what = judge.reference_sets(config.data, job.reference, dataset)
  judge.check_enough(len(judge.excerpts(real, length)), length, what, hint=judge.SAMPLES_HINT)
  return (real, floor, what), dataset


def _judge_samples(frames: np.ndarray, reference, config: RunConfig, job: GenerateConfig,
                   settings, prime: Prime, out_dir: str) -> dict:
  """judge.judge of the sampled frames after the prime; writes O/judge.json."""
  from musicgen_jax import judge  # pylint: disable=g-import-not-at-top
  real, floor, what = reference
  result = judge.judge(list(frames[:, job.prime_frames:]), real, floor,
                       length=judge.excerpt_length(settings.num_frames),
                       steps_per_quarter=config.data.steps_per_quarter)
  named = prime.source.get("piece_name") or os.path.basename(prime.source.get("path", "?"))
  result.update(reference=what, samples=f"{len(frames)} continuations of {named} "
                f"({job.prime_frames} frames), temperature {settings.temperature:g}")
  logging.info("judge against %s:\n%s", what, judge.format_result(result))
  with open(os.path.join(out_dir, "judge.json"), "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  return result


def _sample(config: RunConfig, load_run, out_dir: str, settings, job: GenerateConfig,
            dataset: Any, overwrite: bool) -> SampleResult:
  """Every input checked, then the model loaded, sampled and written."""
  check_prime_fits(config.model, job.prime_frames)
  audio = audio_format(job)
  check_out_dir(out_dir, overwrite)
  reference = None
  if job.reference:
    reference, dataset = _judge_reference(config, settings, job, dataset)
  prime = load_prime(config, job, dataset)
  run = load_run()
  prepare_out_dir(out_dir, overwrite)  # every input checked: now O may be made
  logging.info("%s from %s, step %d; prime: %s", config.model.model, run.workdir, run.step,
               prime.source)
  frames, timing = sample_frames(config.model, run.params, prime.frames, settings,
                                 job.num_samples, job.seed, allowed_pitches(config.model, job))
  logging.info("sampled %d x %d frames: %.0f frames/s (%.3f s; compile %.2f s, not counted)",
               job.num_samples, settings.num_frames, timing["frames_per_s"],
               timing["sample_seconds"], timing["compile_seconds"])
  record = sample_record(run.workdir, config, run.step, settings, job, prime, timing)
  result = write_samples(frames, out_dir, record, config, job, audio)
  logging.info("wrote %d samples to %s; listen: open %s in a browser", job.num_samples,
               out_dir, result.page_path)
  if reference is not None:
    result = dataclasses.replace(result, judge=_judge_samples(frames, reference, config, job,
                                                              settings, prime, out_dir))
  return result

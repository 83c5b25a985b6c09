"""The studio's work, without a browser: which models there are, primes, checked requests,
and generation with compiled samplers kept across requests.

    studio = Studio("studio_out", runs_dir="runs")
    entries = studio.models()                       # shipped models, then trained workdirs
    result = studio.generate(Request(model=entries[0].key, num_frames=128))
    result.samples[0].audio                         # studio_out/runs/0001-chorales/...

Everything the studio writes is inside its output folder: each request's samples in
O/runs/NNNN-MODEL/ (MIDI, audio, piano roll, settings), a held-out prime's dataset cache
in O/cache/ when the run's own cache folder is gone. Bad input raises `StudioError`, whose
message is what the page shows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import Callable

import numpy as np
from absl import logging

from musicgen_jax import generate, pretrained, sampling
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.config import RunConfig
from musicgen_jax.encoding import MidiError
from musicgen_jax.models.heads import frame_width

SHIPPED, WORKDIR = "shipped", "workdir"
PRIME_SOURCES = ("shipped", "upload", "held_out")
MAX_FRAMES = 4096  # frames per sample a request may ask for
MAX_SAMPLES = 16
MAX_PRIME_FRAMES = 512
MIN_TEMPO, MAX_TEMPO = 10, 1000  # bpm
MEMORY_FRACTION = 0.5  # a request may plan to use at most this share of the free memory
# Bytes a request holds per generated frame and sample, beyond the frame itself: the
# sampler's copies of its output, the MIDI and the audio (22.05 kHz stereo float32 for about
# half a second a frame, rendered one sample at a time).
AUDIO_BYTES_PER_FRAME = 22050 * 2 * 4 // 2
RUN_PATTERN = "{:04d}-{}"


class StudioError(ValueError):
  """A request the studio cannot carry out; the message says what to change."""


def _plain(message: str) -> str:
  """A library message in the page's words: settings by name, not as command-line flags."""
  return (message.replace("as --prime_midi", "as the prime").replace("--prime_midi=", "")
          .replace("--", ""))


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """A model the studio can sample: shipped in the package, or a trained workdir.

  key: what a request names it by ('shipped:NAME' or 'workdir:PATH').
  defaults: its own sampling settings (those the judge chose for it, where it did).
  """

  key: str
  kind: str
  name: str
  path: str
  config: RunConfig
  test_nll: float | None
  judge: dict | None
  trained_on: str
  defaults: dict
  prime_frames: int

  @property
  def label(self) -> str:
    nll = f"test NLL {self.test_nll:.3f}" if self.test_nll is not None else "not evaluated"
    return f"{self.name} ({self.kind}: {self.config.model.model}, {nll})"

  def describe(self) -> str:
    """A few lines of markdown: what it is, what it was trained on, its numbers."""
    model = self.config.model
    lines = [f"**{self.name}** ({self.kind}): {model.model}, hidden {model.hidden_size}, "
             f"{model.note_head} note head" + (", dynamics" if model.velocity_bins else ""),
             f"- trained on: {self.trained_on}",
             "- test NLL (notes + duration): " +
             (f"{self.test_nll:.3f}" if self.test_nll is not None else
              "not measured (run `python -m musicgen_jax.evaluate --workdir=W --split=test`)")]
    if self.judge:
      lines.append(f"- judge (0.5: indistinguishable from real music): "
                   f"{self.judge['balanced_accuracy']:.3f} ± {self.judge.get('spread', 0):.3f}"
                   + (f", floor {self.judge['floor']:.3f}" if "floor" in self.judge else "")
                   + f" against {self.judge.get('reference', 'held-out music')}")
    else:
      lines.append("- judge: not measured")
    if self.defaults:
      lines.append("- its own sampling: " + ", ".join(f"{k} {v}" for k, v in
                                                      self.defaults.items()))
    return "\n".join(lines)


def _trained_on(config: RunConfig) -> str:
  data = config.data
  where = {"midi_dir": data.data_dir, "json": data.data_path,
           "music21_corpus": getattr(data, "corpus", "") or "music21's corpus",
           "bach_chorales": "music21's Bach chorales"}.get(data.dataset, "")
  return f"{data.dataset}" + (f" ({where})" if where else "")


def _read_json(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    logging.warning("cannot read %s: %s", path, e)
    return None


def shipped_entry(name: str) -> ModelEntry:
  described = pretrained.info(name)
  config = RunConfig.load(pretrained.model_dir(name))
  from musicgen_jax.data import encode_file  # pylint: disable=g-import-not-at-top
  prime_frames = len(encode_file(config.data, pretrained.prime_path(name))[0])
  return ModelEntry(
      key=f"{SHIPPED}:{name}", kind=SHIPPED, name=name, path=pretrained.model_dir(name),
      config=config, test_nll=described.get("test_nll"), judge=described.get("judge"),
      trained_on=described.get("source", _trained_on(config)),
      defaults=pretrained.sampling_defaults(name), prime_frames=prime_frames)


def workdir_entry(path: str, runs_dir: str) -> ModelEntry:
  config = workdir_lib.load_config(path)
  evaluated = _read_json(os.path.join(path, "eval_test.json")) or {}
  judged = pretrained._judged(path)  # pylint: disable=protected-access
  chosen = judged.get("sampling") or {}
  name = os.path.relpath(path, runs_dir)
  return ModelEntry(
      key=f"{WORKDIR}:{os.path.abspath(path)}", kind=WORKDIR, name=name,
      path=os.path.abspath(path), config=config, test_nll=evaluated.get("nll"),
      judge=judged.get("judge"), trained_on=_trained_on(config),
      defaults={k: chosen[k] for k in pretrained.SAMPLING_KEYS if k in chosen},
      prime_frames=10)


def find_workdirs(runs_dir: str, max_depth: int = 3) -> list[str]:
  """Folders under runs_dir (itself included) holding config.json and a checkpoint."""
  found = []
  runs_dir = os.path.abspath(runs_dir)
  for folder, subfolders, files in os.walk(runs_dir):
    depth = os.path.relpath(folder, runs_dir).count(os.sep)
    if "config.json" in files and "checkpoints" in subfolders:
      if workdir_lib.checkpoint_steps(folder):
        found.append(folder)
      subfolders[:] = []
    elif depth >= max_depth:
      subfolders[:] = []
    subfolders.sort()
  return sorted(found)


def list_models(runs_dir: str | None = None) -> list[ModelEntry]:
  """The shipped models, then every trained workdir under runs_dir; one that cannot be read
  is left out with a warning."""
  entries = []
  for name in pretrained.names():
    try:
      entries.append(shipped_entry(name))
    except (OSError, ValueError) as e:
      logging.warning("shipped model %s left out: %s", name, e)
  if runs_dir:
    for path in find_workdirs(runs_dir):
      try:
        entries.append(workdir_entry(path, runs_dir))
      except (OSError, ValueError) as e:
        logging.warning("workdir %s left out: %s", path, e)
  return entries


@dataclasses.dataclass(frozen=True)
class Request:
  """One generation request: the model, the prime and the sampler's settings.

  prime: 'shipped' (the model's own prime: a shipped model's prime.mid, a workdir's first
  test piece), 'upload' (`upload`, a MIDI file's path) or 'held_out' (`held_out`,
  'SPLIT/INDEX' of the run's dataset). None values take the model's own defaults.
  """

  model: str
  prime: str = "shipped"
  upload: str | None = None
  held_out: str | None = None
  prime_frames: int | None = None
  num_frames: int = 256
  num_samples: int = 2
  temperature: float | None = None
  top_p: float | None = None
  max_polyphony: int | None = None
  seed: int = 0
  tempo_bpm: float | None = None
  velocity: int = 80
  velocity_temperature: float = 1.0


@dataclasses.dataclass(frozen=True)
class SampleFiles:
  midi: str
  json: str
  png: str | None
  audio: str | None


@dataclasses.dataclass(frozen=True)
class Result:
  """What one request wrote (in `folder`) and how long each part took."""

  folder: str
  samples: list[SampleFiles]
  settings_path: str
  settings: dict
  timing: dict


def free_memory_bytes() -> int:
  """MemAvailable from /proc/meminfo, else the physical memory."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def request_bytes(num_samples: int, frames: int, width: int) -> int:
  """About what a request holds in memory at its peak (see AUDIO_BYTES_PER_FRAME)."""
  return num_samples * frames * (4 * width * 4) + frames * AUDIO_BYTES_PER_FRAME


def check_request(request: Request, entry: ModelEntry) -> tuple[sampling.SampleSettings,
                                                                 generate.GenerateConfig]:
  """The request's settings with every range checked, before anything is loaded."""
  if request.prime not in PRIME_SOURCES:
    raise StudioError(f"unknown prime source {request.prime!r}; choose one of "
                      f"{', '.join(PRIME_SOURCES)}")
  limits = (("num_frames", request.num_frames, MAX_FRAMES),
            ("num_samples", request.num_samples, MAX_SAMPLES),
            ("prime_frames", request.prime_frames or 1, MAX_PRIME_FRAMES))
  for name, value, high in limits:
    if not isinstance(value, (int, np.integer)) or not 1 <= value <= high:
      raise StudioError(f"{name} must be a whole number from 1 to {high}, got {value!r}")
  if request.tempo_bpm and not MIN_TEMPO <= request.tempo_bpm <= MAX_TEMPO:
    raise StudioError(f"the tempo must be from {MIN_TEMPO} to {MAX_TEMPO} bpm (0: the "
                      f"prime's own), got {request.tempo_bpm:g}")
  width = frame_width(entry.config.model)
  prime_frames = request.prime_frames or entry.prime_frames
  need = request_bytes(request.num_samples, prime_frames + request.num_frames, width)
  free = free_memory_bytes()
  if need > MEMORY_FRACTION * free:
    raise StudioError(f"this request needs about {need / 2**30:.1f} GiB and this machine has "
                      f"{free / 2**30:.1f} GiB free: ask for fewer samples or frames")
  chosen = {k: getattr(request, k) for k in pretrained.SAMPLING_KEYS
            if getattr(request, k) is not None}
  sample_options = dict(entry.defaults, **chosen, num_frames=request.num_frames,
                        velocity_temperature=request.velocity_temperature)
  try:
    settings = sampling.SampleSettings(**sample_options)
    job = generate.GenerateConfig(num_samples=request.num_samples, seed=int(request.seed),
                                  prime_frames=prime_frames, tempo_bpm=request.tempo_bpm or None,
                                  velocity=int(request.velocity))
    generate.check_prime_fits(entry.config.model, prime_frames)
  except (TypeError, ValueError) as e:
    raise StudioError(_plain(str(e))) from e
  return settings, job


class Studio:
  """The models, their loaded parameters and compiled samplers, and the output folder.

  One request runs at a time (`generate` holds a lock: a second caller waits its turn).
  """

  def __init__(self, out_dir: str, runs_dir: str | None = None, *,
               audio: str | None = None, soundfont: str | None = None):
    workdir_lib.ensure_writable_dir(out_dir, "out_dir")
    self.out_dir = os.path.abspath(out_dir)
    self.runs_dir = runs_dir
    self.audio = audio
    self.soundfont = soundfont
    self.samplers = generate.SamplerCache()
    self.lock = threading.Lock()
    self._entries: dict[str, ModelEntry] = {}
    self._runs: dict[str, workdir_lib.TrainedRun] = {}
    self._datasets: dict[str, object] = {}
    self.refresh()

  @property
  def results_dir(self) -> str:
    return os.path.join(self.out_dir, "runs")

  def refresh(self) -> list[ModelEntry]:
    entries = list_models(self.runs_dir)
    self._entries = {e.key: e for e in entries}
    return entries

  def models(self) -> list[ModelEntry]:
    return list(self._entries.values())

  def entry(self, key: str) -> ModelEntry:
    if key not in self._entries:
      raise StudioError(f"no model {key!r}: choose one of the list (refresh it after "
                        "training a new run)")
    return self._entries[key]

  def _run(self, entry: ModelEntry) -> workdir_lib.TrainedRun:
    if entry.key not in self._runs:
      self._runs[entry.key] = (pretrained.load(entry.name) if entry.kind == SHIPPED
                               else workdir_lib.load_run(entry.path))
    return self._runs[entry.key]

  def dataset(self, entry: ModelEntry):
    """The run's dataset (for held-out primes): read from its own cache, or encoded into
    O/cache when that folder is gone."""
    if entry.key not in self._datasets:
      from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
      data = entry.config.data
      if not os.path.isdir(data.cache_dir):
        data = dataclasses.replace(data, cache_dir=os.path.join(self.out_dir, "cache"))
      try:
        self._datasets[entry.key] = load_dataset(data)
      except (OSError, ValueError, ImportError) as e:
        raise StudioError(f"the held-out pieces of {entry.name} cannot be read here: {e}; "
                          "use its own prime or upload a MIDI file") from e
    return self._datasets[entry.key]

  def held_out_pieces(self, key: str) -> list[tuple[str, str]]:
    """(label, 'SPLIT/INDEX') for every piece of the run's test and valid splits."""
    entry = self.entry(key)
    dataset = self.dataset(entry)
    return [(f"{split} {i}: {piece.name} ({piece.num_frames} frames)", f"{split}/{i}")
            for split in generate.HELD_OUT_SPLITS[::-1] for i, piece in
            enumerate(dataset[split])]

  def _prime(self, entry: ModelEntry, request: Request, job: generate.GenerateConfig):
    if request.prime == "upload":
      if not request.upload:
        raise StudioError("upload a MIDI file for the prime, or choose another prime")
      if os.path.getsize(request.upload) == 0:
        raise StudioError(f"{os.path.basename(request.upload)} is empty: upload a MIDI file")
      job = dataclasses.replace(job, prime_midi=request.upload)
      try:
        return generate.load_prime(entry.config, job)
      except ValueError as e:  # named by the file's own name, not the upload folder's
        raise StudioError(_plain(str(e)).replace(request.upload,
                                                 os.path.basename(request.upload))) from e
    if request.prime == "held_out" or entry.kind == WORKDIR:
      split, index = "test", 0
      if request.prime == "held_out":
        if not request.held_out or "/" not in request.held_out:
          raise StudioError("choose a held-out piece for the prime")
        split, index = request.held_out.split("/", 1)
        index = int(index)
      job = dataclasses.replace(job, prime_split=split, prime_piece=index)
      return generate.load_prime(entry.config, job, self.dataset(entry))
    return generate.load_prime(entry.config, dataclasses.replace(
        job, prime_midi=pretrained.prime_path(entry.name)))

  def _folder(self, entry: ModelEntry) -> str:
    os.makedirs(self.results_dir, exist_ok=True)
    taken = [int(n.split("-", 1)[0]) for n in os.listdir(self.results_dir)
             if n.split("-", 1)[0].isdigit()]
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in entry.name)[-40:]
    folder = os.path.join(self.results_dir, RUN_PATTERN.format(max(taken, default=0) + 1, name))
    os.makedirs(folder)
    return folder

  def generate(self, request: Request,
               progress: Callable[[float, str], None] | None = None) -> Result:
    """Checks the request, samples it and writes its files; one request at a time."""
    progress = progress or (lambda fraction, what: None)
    entry = self.entry(request.model)
    settings, job = check_request(request, entry)
    with self.lock:
      try:
        return self._generate(entry, request, settings, job, progress)
      except StudioError:
        raise
      except (ValueError, FileNotFoundError) as e:  # bad input: MidiError, a short prime
        raise StudioError(_plain(str(e))) from e
      except (OSError, ImportError, RuntimeError, MemoryError) as e:
        logging.exception("request failed: %s", request)
        raise StudioError(f"generation failed: {_plain(str(e))}") from e

  def _generate(self, entry: ModelEntry, request: Request, settings, job, progress) -> Result:
    timing = {}
    start = time.perf_counter()
    progress(0.05, "reading the prime")
    prime = self._prime(entry, request, job)
    progress(0.15, "loading the model")
    run = self._run(entry)
    audio = generate.audio_format(dataclasses.replace(job, audio=self.audio,
                                                      soundfont=self.soundfont))
    timing["prepare_seconds"] = round(time.perf_counter() - start, 3)
    progress(0.25, "sampling (the first request of a model and shape compiles the sampler)")
    frames, sampled = self.samplers.sample(entry.config.model, run.params, prime.frames,
                                           settings, job.num_samples, job.seed,
                                           generate.allowed_pitches(entry.config.model, job))
    timing.update(sampled)
    progress(0.6, "writing MIDI, piano rolls and audio")
    start = time.perf_counter()
    folder = self._folder(entry)
    job = dataclasses.replace(job, soundfont=self.soundfont)
    record = generate.sample_record(run.workdir, entry.config, run.step, settings, job, prime,
                                    {k: v for k, v in sampled.items() if k != "compiled"})
    written = generate.write_samples(frames, folder, record, entry.config, job, audio)
    timing["write_seconds"] = round(time.perf_counter() - start, 3)
    settings_record = {"model": entry.key, "request": dataclasses.asdict(request),
                       "sampling": dataclasses.asdict(settings), "timing": timing,
                       "prime": prime.source, "tempo_bpm": record["tempo_bpm"]}
    settings_path = os.path.join(folder, "settings.json")
    with open(settings_path, "w") as f:
      json.dump(settings_record, f, indent=2)
      f.write("\n")
    samples = [SampleFiles(midi=m, json=j,
                           png=written.png_paths[i] if written.png_paths else None,
                           audio=written.audio_paths[i] if written.audio_paths else None)
               for i, (m, j) in enumerate(zip(written.midi_paths, written.json_paths))]
    progress(1.0, "done")
    logging.info("studio: %s, %d x %d frames in %s (%s)", entry.name, job.num_samples,
                 settings.num_frames, folder, timing)
    return Result(folder=folder, samples=samples, settings_path=settings_path,
                  settings=settings_record, timing=timing)

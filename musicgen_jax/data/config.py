"""DataConfig: which music to read and how to encode it, in one frozen dataclass."""

from __future__ import annotations

import dataclasses
import os

from musicgen_jax.encoding import DURATION_MODES, SUSTAIN_PEDAL_MODES
from musicgen_jax.midi import READERS
from musicgen_jax.settings import FREE, Settings, in_range, non_negative, positive, setting

DATASETS = ("bach_chorales", "music21_corpus", "midi_dir", "json")
CACHE_DIR_ENV = "MUSICGEN_CACHE_DIR"


def default_cache_dir() -> str:
  """The cache folder: $MUSICGEN_CACHE_DIR, else ~/.cache/musicgen_jax."""
  env = os.environ.get(CACHE_DIR_ENV)
  if env:
    return env
  return os.path.join(os.path.expanduser("~"), ".cache", "musicgen_jax")


# The study's frame: 107 columns, every note ending at the next onset, no pedal, no metre
# (`DataConfig(**STUDY_FRAME)`; its flagfiles say the same in flags).
STUDY_FRAME = {"note_lengths": False, "sustain_pedal": "ignore", "metre": False}


@dataclasses.dataclass(frozen=True)
class DataConfig(Settings):
  """Where the music comes from, how it is encoded, split and cached.

  Changing a setting that affects encoding (steps_per_quarter, duration_mode,
  include_drums) re-encodes; changing the split fractions does not (splits are
  assigned when the cache is loaded).
  """

  dataset: str = setting(
      "bach_chorales", "Where the music comes from: 'bach_chorales' (the chorales in music21's "
      "corpus, no download), 'music21_corpus' (the rest of music21's corpus, chosen by "
      "--corpus), 'midi_dir' (every .mid/.midi below --data_dir) or 'json' (the "
      "polyphonic-music benchmark file at --data_path).", choices=DATASETS)
  corpus: str = setting(
      "", "--dataset=music21_corpus: comma-separated collections of music21's corpus (its "
      "folders: composers such as palestrina, monteverdi, beethoven, mozart, haydn, or "
      "collections such as trecento, essenFolksong, oneills1850, ryansMammoth; an unknown "
      "name lists them all); empty = every collection but bach, demos and theoryExercises.")
  data_dir: str | None = setting(
      None, "Folder searched recursively for .mid/.midi files (--dataset=midi_dir).")
  data_path: str | None = setting(
      None, 'Benchmark JSON file {"train"|"valid"|"test": [piece, ...]} (--dataset=json).')
  steps_per_quarter: int = setting(
      12, "Quantisation grid in steps per quarter note (12 covers 16ths and triplets).",
      check=positive)
  duration_mode: str = setting(
      "ioi", "Frame duration: 'ioi' = time to the next onset (rests as empty frames), "
      "'note' = the chord's longest note (the seed study's encoding).", choices=DURATION_MODES)
  include_drums: bool = setting(False, "Keep notes on MIDI channel 10 (General MIDI drums).")
  sustain_pedal: str = setting(
      "apply", "MIDI sources: 'apply' holds a note released under the sustain pedal "
      "(controller 64) until the pedal lifts or its pitch is struck again, as a pianist hears "
      "it; 'ignore' keeps the notes as written (the study's). The json benchmarks have no "
      "pedal: there it is always 'ignore'.", choices=SUSTAIN_PEDAL_MODES,
      stored_default="ignore")  # runs from before the pedal was read kept notes as written
  note_lengths: bool = setting(
      True, "Frames carry each note's own length (106 more columns) and models predict it, "
      "so a note held across later onsets is held; off, every note ends at the next onset "
      "(the study's 107-dim frame). MIDI sources with --duration_mode=ioi: off with "
      "--duration_mode=note, and for the json benchmarks, whose time steps list the pitches "
      "sounding.",
      stored_default=False)
  metre: bool = setting(
      True, "Models read where each frame starts in its beat and bar (from the running time "
      "and the piece's first time signature; a json benchmark's bar is four time steps), "
      "computed when the data is loaded: the stored frames and the NLL's terms are the "
      "same. Off: the study's input.", stored_default=False)
  valid_fraction: float = setting(
      0.1, "Fraction of MIDI pieces held out for validation (split by piece, from a hash of "
      "each file's path; json uses its given splits).", check=in_range(0.0, 1.0, high_open=True))
  test_fraction: float = setting(
      0.1, "Fraction of MIDI pieces held out for testing (split by piece).",
      check=in_range(0.0, 1.0, high_open=True))
  cache_dir: str = setting(
      help="Folder for encoded-dataset caches (numpy .npz, never pickle).",
      default_factory=default_cache_dir, resume=FREE,
      flag_default_help=f"${CACHE_DIR_ENV} or ~/.cache/musicgen_jax")
  num_workers: int = setting(
      0, "Processes that encode MIDI files: 0 = all cores, 1 = no worker processes.",
      check=non_negative, resume=FREE)
  midi_reader: str = setting(
      "auto", "MIDI parser: 'symusic' (C++; files it would read differently from the "
      "specification, such as notes never closed, go to mido), 'mido' (the reference), or "
      "'auto' (symusic when installed). Both give the same frames on every file.",
      choices=READERS)
  velocity_bins: int = setting(
      0, "Dynamics: frames carry each onset's mean MIDI velocity and models predict it in "
      "this many classes; 0 = off (the study's 107-dim frame).", check=non_negative)
  shard_files: int = setting(
      0, "MIDI sources: encode and keep the corpus in shards of N files each, for corpora "
      "larger than memory. Each shard is encoded by a worker and written as memory-mapped "
      "sparse stores beside the cache, an interrupted encoding resumes from the shards "
      "written, a changed file re-encodes only its shard, and a process training on a share "
      "of the data (--data_shares) opens only its own shards. The pieces, splits and "
      "batches are those of the one-file cache. 0 = one cache file.",
      check=non_negative, resume=FREE)
  max_files: int = setting(
      0, "Use only the first N source files (sorted by name); 0 = all. For quick runs.",
      check=non_negative)

  def __post_init__(self):
    super().__post_init__()
    if self.dataset == "midi_dir" and not self.data_dir:
      raise ValueError("--dataset=midi_dir needs --data_dir=DIR (a folder of .mid/.midi files)")
    if self.dataset == "json" and not self.data_path:
      raise ValueError("--dataset=json needs --data_path=FILE (a benchmark .json file)")
    if self.valid_fraction + self.test_fraction >= 1.0:
      raise ValueError(
          f"--valid_fraction + --test_fraction = {self.valid_fraction + self.test_fraction:g} "
          "leaves no training data: lower them so they sum below 1")
    if self.dataset == "json":  # time steps of sounding pitches: no lengths, no pedal
      object.__setattr__(self, "note_lengths", False)
      object.__setattr__(self, "sustain_pedal", "ignore")
    if self.duration_mode != "ioi":  # lengths need frames that last until the next onset
      object.__setattr__(self, "note_lengths", False)
    if self.velocity_bins and self.dataset == "json":
      raise ValueError("--velocity_bins needs MIDI (--dataset=midi_dir or bach_chorales): "
                       "the json benchmarks have no dynamics")
    if not self.cache_dir:
      raise ValueError("--cache_dir is empty: set it to a writable folder")

  @property
  def encoding_settings(self) -> dict:
    """The settings that change the encoded frames: `encoding.encode_midi`'s keyword
    arguments, and part of the cache key."""
    return {
        "steps_per_quarter": self.steps_per_quarter,
        "duration_mode": self.duration_mode,
        "include_drums": self.include_drums,
        "with_velocity": self.velocity_bins > 0,
        "reader": self.midi_reader,
        "sustain_pedal": self.sustain_pedal,
        "note_lengths": self.note_lengths,
    }

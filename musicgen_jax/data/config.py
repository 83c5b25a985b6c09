"""DataConfig: which music to read and how to encode it, in one frozen dataclass."""

import dataclasses
import os

DATASETS = ("bach_chorales", "midi_dir", "json")
DURATION_MODES = ("ioi", "note")
CACHE_DIR_ENV = "MUSICGEN_CACHE_DIR"


def default_cache_dir() -> str:
  """The cache folder: $MUSICGEN_CACHE_DIR, else ~/.cache/musicgen_jax."""
  env = os.environ.get(CACHE_DIR_ENV)
  if env:
    return env
  return os.path.join(os.path.expanduser("~"), ".cache", "musicgen_jax")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the music comes from, how it is encoded, split and cached.

  Changing a setting that affects encoding (steps_per_quarter, duration_mode,
  include_drums) re-encodes; changing the split fractions does not (splits are
  assigned when the cache is loaded).
  """
  # 'bach_chorales' (music21's corpus, no download), 'midi_dir' or 'json'.
  dataset: str = "bach_chorales"
  # Folder searched recursively for .mid/.midi files (dataset='midi_dir').
  data_dir: str | None = None
  # Benchmark JSON file {"train"|"valid"|"test": [piece, ...]} (dataset='json').
  data_path: str | None = None
  # Quantisation grid: 12 per quarter covers 16ths and triplets.
  steps_per_quarter: int = 12
  # 'ioi': duration = time to next onset (with rest frames); 'note': longest note.
  duration_mode: str = "ioi"
  # Keep channel 10 (General MIDI drums); off by default.
  include_drums: bool = False
  # Fractions of MIDI pieces held out for validation and test (by piece).
  valid_fraction: float = 0.1
  test_fraction: float = 0.1
  # Where encoded datasets are cached (numpy .npz, never pickle).
  cache_dir: str = dataclasses.field(default_factory=default_cache_dir)
  # Encoding processes: 0 = all cores, 1 = encode in the calling process.
  num_workers: int = 0
  # Use only the first max_files source files (sorted); 0 = all. For quick runs.
  max_files: int = 0

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(
          f"unknown dataset {self.dataset!r}: set --dataset to one of "
          f"{', '.join(DATASETS)}")
    if self.dataset == "midi_dir" and not self.data_dir:
      raise ValueError(
          "--dataset=midi_dir needs --data_dir=DIR (a folder of .mid/.midi files)")
    if self.dataset == "json" and not self.data_path:
      raise ValueError(
          "--dataset=json needs --data_path=FILE (a benchmark .json file)")
    if isinstance(self.steps_per_quarter, bool) or not isinstance(
        self.steps_per_quarter, int) or self.steps_per_quarter < 1:
      raise ValueError(
          f"steps_per_quarter must be a positive integer, got "
          f"{self.steps_per_quarter!r}: set --steps_per_quarter to e.g. 12")
    if self.duration_mode not in DURATION_MODES:
      raise ValueError(
          f"unknown duration_mode {self.duration_mode!r}: set --duration_mode to "
          f"one of {', '.join(DURATION_MODES)}")
    for name in ("valid_fraction", "test_fraction"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}: set --{name} "
                         "to e.g. 0.1")
    if self.valid_fraction + self.test_fraction >= 1.0:
      raise ValueError(
          f"valid_fraction + test_fraction = "
          f"{self.valid_fraction + self.test_fraction:g} leaves no training "
          "data: lower --valid_fraction or --test_fraction so they sum below 1")
    if not self.cache_dir:
      raise ValueError("cache_dir is empty: set --cache_dir to a writable folder")
    if self.num_workers < 0:
      raise ValueError(f"num_workers must be >= 0 (0 = all cores), got "
                       f"{self.num_workers}: set --num_workers")
    if self.max_files < 0:
      raise ValueError(f"max_files must be >= 0 (0 = all), got {self.max_files}")

  @property
  def encoding_settings(self) -> dict:
    """The settings that change the encoded frames (part of the cache key)."""
    return {
        "steps_per_quarter": self.steps_per_quarter,
        "duration_mode": self.duration_mode,
        "include_drums": self.include_drums,
    }

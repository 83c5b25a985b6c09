"""absl flags for the data layer, shared by every program that reads data.

    from musicgen_jax.data import flags as data_flags
    data_flags.define_data_flags()
    ...
    cfg = data_flags.data_config_from_flags(FLAGS)
"""

from absl import flags

from musicgen_jax.data import config as config_lib


def define_data_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines --dataset, --data_dir, ... on flag_values (once; repeat is a no-op)."""
  if "dataset" in flag_values:
    return
  defaults = config_lib.DataConfig()
  flags.DEFINE_enum(
      "dataset", defaults.dataset, list(config_lib.DATASETS),
      "Where the music comes from: 'bach_chorales' (the chorales in music21's "
      "corpus, no download), 'midi_dir' (every .mid/.midi below --data_dir) or "
      "'json' (the polyphonic-music benchmark file at --data_path).",
      flag_values=flag_values)
  flags.DEFINE_string(
      "data_dir", None,
      "Folder searched recursively for .mid/.midi files (--dataset=midi_dir).",
      flag_values=flag_values)
  flags.DEFINE_string(
      "data_path", None,
      "Benchmark JSON file {\"train\"|\"valid\"|\"test\": [piece, ...]} "
      "(--dataset=json).", flag_values=flag_values)
  flags.DEFINE_integer(
      "steps_per_quarter", defaults.steps_per_quarter,
      "Quantisation grid in steps per quarter note (12 covers 16ths and "
      "triplets).", lower_bound=1, flag_values=flag_values)
  flags.DEFINE_enum(
      "duration_mode", defaults.duration_mode,
      list(config_lib.DURATION_MODES),
      "Frame duration: 'ioi' = time to the next onset (rests as empty frames), "
      "'note' = the chord's longest note (the seed study's encoding).",
      flag_values=flag_values)
  flags.DEFINE_boolean(
      "include_drums", defaults.include_drums,
      "Keep notes on MIDI channel 10 (General MIDI drums).",
      flag_values=flag_values)
  flags.DEFINE_float(
      "valid_fraction", defaults.valid_fraction,
      "Fraction of MIDI pieces held out for validation (split by piece, from "
      "a hash of each file's path; json uses its given splits).",
      flag_values=flag_values)
  flags.DEFINE_float(
      "test_fraction", defaults.test_fraction,
      "Fraction of MIDI pieces held out for testing (split by piece).",
      flag_values=flag_values)
  flags.DEFINE_string(
      "cache_dir", None,
      "Folder for encoded-dataset caches (default: $"
      f"{config_lib.CACHE_DIR_ENV} or ~/.cache/musicgen_jax).",
      flag_values=flag_values)
  flags.DEFINE_integer(
      "num_workers", defaults.num_workers,
      "Processes that encode MIDI files: 0 = all cores, 1 = no worker "
      "processes.", lower_bound=0, flag_values=flag_values)


def data_config_from_flags(
    flag_values: flags.FlagValues = flags.FLAGS) -> config_lib.DataConfig:
  """The DataConfig that the data flags describe (validated)."""
  kwargs = dict(
      dataset=flag_values.dataset,
      data_dir=flag_values.data_dir,
      data_path=flag_values.data_path,
      steps_per_quarter=flag_values.steps_per_quarter,
      duration_mode=flag_values.duration_mode,
      include_drums=flag_values.include_drums,
      valid_fraction=flag_values.valid_fraction,
      test_fraction=flag_values.test_fraction,
      num_workers=flag_values.num_workers,
  )
  if flag_values.cache_dir:
    kwargs["cache_dir"] = flag_values.cache_dir
  return config_lib.DataConfig(**kwargs)

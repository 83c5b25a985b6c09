"""Benchmark: MIDI encoding speed, all-core speed-up, and the cache reload.

Run from the repository root (about 1 minute on 2 idle cores for the 87 files
of ../shared/data/piano-midi):

    python -m experiments.bench_encoding [--data_dir=DIR] [--out=bench.json]

It measures, on the same files in the same run:
  1. our single-process encoder (`encode_midi`, parse + quantise + frames) in
     files/s and frames/s, next to `pretty_midi.PrettyMIDI` parsing the same
     files (parse only; ratio > 1 means ours is faster);
  2. `load_dataset` encoding with 1 process and with all cores, each into a
     fresh temporary cache folder (the speed-up);
  3. `load_dataset` again from the cache (first all-core load time / cached
     load time).
"""

import json
import os
import platform
import resource
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from musicgen_jax import encoding
from musicgen_jax.data import config as config_lib
from musicgen_jax.data import pipeline
from musicgen_jax.data import sources

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.path.join(_REPO_ROOT, "..", "shared", "data", "piano-midi"),
    "Folder of .mid/.midi files to encode (searched recursively).")
_OUT = flags.DEFINE_string(
    "out", None, "Write the measurements as JSON to this file.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", 0, "Processes for the all-core measurement; 0 = all cores.",
    lower_bound=0)
_REPEATS = flags.DEFINE_integer(
    "repeats", 2, "Times each timing is repeated; the fastest is reported "
    "(the machine may be shared).", lower_bound=1)
_COPIES_TO = flags.DEFINE_integer(
    "copies_to", 10000, "Also encode a folder of this many files (copies of the data) with "
    "all cores, then reload it from the cache; 0 = skip.", lower_bound=0)
_STEPS_PER_QUARTER = flags.DEFINE_integer(
    "steps_per_quarter", 12, "Quantisation grid used for encoding.",
    lower_bound=1)


def bench_ours(files, reader: str = "auto") -> dict:
  """Single-process encode_midi over the files, with the given MIDI reader."""
  frames = notes = failed = 0
  start = time.perf_counter()
  for f in files:
    try:
      encoded, stats = encoding.encode_midi(
          f.path, steps_per_quarter=_STEPS_PER_QUARTER.value, name=f.name, reader=reader)
    except encoding.MidiError as e:
      logging.warning("ours: %s", e)
      failed += 1
      continue
    frames += encoded.shape[0]
    notes += stats.num_notes
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "files": len(files) - failed, "failed": failed,
          "frames": frames, "notes": notes,
          "files_per_s": (len(files) - failed) / seconds,
          "frames_per_s": frames / seconds}


def bench_pretty_midi(files) -> dict | None:
  """pretty_midi.PrettyMIDI parsing of the same files (None if missing)."""
  try:
    import pretty_midi  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning("pretty_midi is not installed (pip install "
                    "'musicgen-jax[bench]'); skipping the comparison")
    return None
  notes = failed = 0
  start = time.perf_counter()
  for f in files:
    try:
      midi = pretty_midi.PrettyMIDI(f.path)
    except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
      logging.warning("pretty_midi: %s: %s", f.name, e)
      failed += 1
      continue
    notes += sum(len(i.notes) for i in midi.instruments)
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "files": len(files) - failed, "failed": failed,
          "notes": notes, "files_per_s": (len(files) - failed) / seconds}


def _cpu_seconds() -> float:
  """User + system CPU time of this process and its reaped children."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fastest(measure) -> dict:
  """The run with the fewest seconds of _REPEATS runs of measure()."""
  runs = [measure() for _ in range(_REPEATS.value)]
  return min(runs, key=lambda r: r["seconds"])


def bench_fresh_load(data_dir: str, num_workers: int) -> dict:
  with tempfile.TemporaryDirectory() as cache_dir:
    return bench_load(data_dir, num_workers, cache_dir)


def bench_load(data_dir: str, num_workers: int, cache_dir: str) -> dict:
  cfg = config_lib.DataConfig(
      dataset="midi_dir", data_dir=data_dir, num_workers=num_workers,
      steps_per_quarter=_STEPS_PER_QUARTER.value, cache_dir=cache_dir)
  cpu_before = _cpu_seconds()
  start = time.perf_counter()
  dataset = pipeline.load_dataset(cfg)
  seconds = time.perf_counter() - start
  cpu = _cpu_seconds() - cpu_before
  return {"seconds": seconds, "num_workers": num_workers,
          # CPU seconds of this process and its finished workers per wall
          # second: about num_workers on idle cores, lower on a busy machine.
          "cpu_seconds": cpu, "parallelism": cpu / seconds,
          "cache_hit": dataset.summary["cache_hit"],
          "frames": dataset.summary["num_frames"],
          "pieces": dataset.summary["num_pieces"]}


def bench_many(files, count: int, workers: int) -> dict:
  """load_dataset over `count` files (copies of `files`) on all cores, then from the cache."""
  with tempfile.TemporaryDirectory() as root:
    folder = os.path.join(root, "midi")
    for i in range(count):
      f = files[i % len(files)]
      target = os.path.join(folder, f"copy_{i // len(files):04d}", os.path.basename(f.path))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with open(f.path, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    cache = os.path.join(root, "cache")
    first = bench_load(folder, workers, cache)
    again = bench_load(folder, workers, cache)
  return {"files": count, "first": first, "cached": again,
          "files_per_s": count / first["seconds"], "reload_seconds": again["seconds"]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  data_dir = os.path.abspath(_DATA_DIR.value)
  files = sources.list_midi_files(data_dir)
  total_bytes = 0
  for f in files:  # warm the page cache so neither reader pays for the disk
    with open(f.path, "rb") as fh:
      total_bytes += len(fh.read())
  cores = pipeline.available_cores()
  workers = _NUM_WORKERS.value or cores
  logging.info("%d files (%.1f MB) in %s; %d cores", len(files),
               total_bytes / 1e6, data_dir, cores)

  load_before = os.getloadavg()
  from musicgen_jax import midi  # pylint: disable=g-import-not-at-top
  ours = fastest(lambda: bench_ours(files, "auto"))
  ours["reader"] = midi.reader_in_use("auto")
  reference = (ours if ours["reader"] == "mido"
               else fastest(lambda: bench_ours(files, "mido")))
  pm = bench_pretty_midi(files)
  if pm is not None:
    pm = fastest(lambda: bench_pretty_midi(files))
  load_single = fastest(lambda: bench_fresh_load(data_dir, 1))
  load_multi = fastest(lambda: bench_fresh_load(data_dir, workers))
  with tempfile.TemporaryDirectory() as cache_dir:
    first_load = bench_load(data_dir, workers, cache_dir)
    load_cached = fastest(lambda: bench_load(data_dir, workers, cache_dir))
  assert not load_single["cache_hit"] and not load_multi["cache_hit"]
  assert not first_load["cache_hit"] and load_cached["cache_hit"]

  results = {
      "data_dir": data_dir, "num_files": len(files), "bytes": total_bytes,
      "cores": cores, "python": platform.python_version(),
      "load_average_1_5_15_min": {"before": load_before,
                                  "after": os.getloadavg()},
      "repeats": _REPEATS.value,
      "steps_per_quarter": _STEPS_PER_QUARTER.value,
      "ours_single_process": ours, "ours_mido_single_process": reference,
      "pretty_midi": pm,
      "ratio_ours_over_pretty_midi_files_per_s":
          ours["files_per_s"] / pm["files_per_s"] if pm else None,
      "ratio_mido_reader_over_pretty_midi_files_per_s":
          reference["files_per_s"] / pm["files_per_s"] if pm else None,
      "load_dataset_1_process": load_single,
      "load_dataset_all_cores": load_multi,
      "load_dataset_cached": load_cached,
      "all_core_speedup": load_single["seconds"] / load_multi["seconds"],
      "load_dataset_first_all_cores": first_load,
      "cache_reload_ratio": first_load["seconds"] / load_cached["seconds"],
  }
  many = bench_many(files, _COPIES_TO.value, workers) if _COPIES_TO.value else None
  results["many_files"] = many
  rows = [
      (f"encode_midi ({ours['reader']}), 1 process", f"{ours['seconds']:.2f} s",
       f"{ours['files_per_s']:.1f} files/s, {ours['frames_per_s']:.0f} "
       "frames/s"),
      ("encode_midi (mido), 1 process", f"{reference['seconds']:.2f} s",
       f"{reference['files_per_s']:.1f} files/s"),
  ]
  if pm:
    rows.append(("pretty_midi.PrettyMIDI parse", f"{pm['seconds']:.2f} s",
                 f"{pm['files_per_s']:.1f} files/s; ours/pretty_midi = "
                 f"{results['ratio_ours_over_pretty_midi_files_per_s']:.2f}x (mido reader "
                 f"{results['ratio_mido_reader_over_pretty_midi_files_per_s']:.2f}x)"))
  rows += [
      ("load_dataset, 1 process", f"{load_single['seconds']:.2f} s",
       f"{len(files) / load_single['seconds']:.1f} files/s"),
      (f"load_dataset, {workers} processes", f"{load_multi['seconds']:.2f} s",
       f"speed-up {results['all_core_speedup']:.2f}x on {cores} cores; "
       f"{load_multi['cpu_seconds']:.1f} CPU s, parallelism "
       f"{load_multi['parallelism']:.2f} (1 process: "
       f"{load_single['parallelism']:.2f})"),
      ("load_dataset, cached", f"{load_cached['seconds']:.3f} s",
       f"first load ({first_load['seconds']:.2f} s) / cached = "
       f"{results['cache_reload_ratio']:.0f}x"),
  ]
  if many:
    rows += [(f"load_dataset, {many['files']} files", f"{many['first']['seconds']:.1f} s",
              f"{many['files_per_s']:.0f} files/s on {workers} processes; cached reload "
              f"{many['reload_seconds']:.2f} s")]
  lines = [f"{len(files)} files, {ours['frames']} frames, {ours['notes']} "
           f"notes ({data_dir}); {cores} cores, load average "
           f"{load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after; "
           f"fastest of {_REPEATS.value}"]
  lines += [f"{a:<32} {b:>9}   {c}" for a, b, c in rows]
  sys.stdout.write("\n".join(lines) + "\n")
  if _OUT.value:
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)
    logging.info("wrote %s", _OUT.value)


if __name__ == "__main__":
  app.run(main)

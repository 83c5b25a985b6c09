"""Builds the encoded-dataset cache and prints statistics of the data.

    python -m musicgen_jax.prepare --dataset=midi_dir --data_dir=DIR
    python -m musicgen_jax.prepare --dataset=bach_chorales
    python -m musicgen_jax.prepare --dataset=json --data_path=FILE

A second run reads the cache (it says 'cache hit'); a changed encoding setting
or a changed file re-encodes what it must.
"""

import json
import os
import sys

from absl import flags
from absl import logging

from musicgen_jax import cli
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.data import pipeline
from musicgen_jax.data import splits as splits_lib
from musicgen_jax.data import stats as stats_lib
from musicgen_jax.data.config import DataConfig
from musicgen_jax.encoding import pitch_name
from musicgen_jax.settings import define_flags as define_settings_flags
from musicgen_jax.settings import from_flags


def prepare_statistics(dataset: pipeline.Dataset) -> dict:
  """Statistics per split and over all pieces, plus the load summary."""
  per_split = {s: stats_lib.dataset_statistics(dataset.splits[s])
               for s in splits_lib.SPLITS}
  everything = [p for s in splits_lib.SPLITS for p in dataset.splits[s]]
  return {
      "summary": dataset.summary,
      "settings": dataset.config.encoding_settings,
      "splits": per_split,
      "all": stats_lib.dataset_statistics(everything),
      "skipped": [{"name": n, "reason": r} for n, r in dataset.skipped],
  }


def _summary_lines(summary: dict, settings: dict) -> list[str]:
  is_json = summary["dataset"] == "json"
  lines = [f"dataset: {summary['dataset']} ({summary['source']})"]
  if is_json:
    lines.append("settings: one frame of duration 1.0 per time step (the encoding settings "
                 "do not apply)")
  else:
    lines.append("settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))
  if summary["cache_hit"]:
    lines.append(f"cache: hit, loaded in {summary['load_seconds']:.2f} s "
                 f"({summary['cache_path']})")
  else:
    lines.append(
        f"cache: built; encoded {summary['num_encoded']} {'piece' if is_json else 'file'}(s) "
        f"in {summary['encode_seconds']:.2f} s ({summary['num_cached']} from cache), loaded "
        f"in {summary['load_seconds']:.2f} s ({summary['cache_path']})")
  counts = "" if is_json else f"files: {summary['num_files']}, "
  lines.append(
      f"{counts}pieces: {summary['num_pieces']}, skipped: {summary['num_skipped']}; notes "
      f"dropped: {summary['dropped_out_of_range']} out of pitch range 21..126, "
      f"{summary['dropped_drums']} drums; notes never closed by their file (ended at its "
      f"last event): {summary.get('unclosed_notes', 0)}")
  if settings.get("sustain_pedal") == "apply":
    lines.append(f"sustain pedal: {summary.get('pedal_extended_notes', 0)} notes held past "
                 "their release")
  lines += _collection_lines(summary)
  if "constant_velocity_files" in summary:
    constant = summary["constant_velocity_files"]
    lines.append(f"dynamics: {len(constant)} of {summary['num_pieces']} pieces play every note "
                 "at one velocity" + (f" (e.g. {', '.join(constant[:3])})" if constant else ""))
  return lines


def _collection_lines(summary: dict) -> list[str]:
  """--dataset=music21_corpus: pieces and frames per collection, and the licence notes."""
  if "collections" not in summary:
    return []
  lines = [f"{'collection':<18} {'pieces':>7} {'frames':>9} {'skipped':>8}"]
  lines += [f"{name:<18} {c['pieces']:>7d} {c['frames']:>9d} {c['skipped']:>8d}"
            for name, c in summary["collections"].items()]
  lines += [f"licence note ({name}): {path}"
            for name, path in summary.get("licence_notes", {}).items()]
  return lines


def _split_row(name: str, s: dict) -> str:
  if s["pitch_min"] is None:
    pitch_range = "-"
  else:
    pitch_range = (f"{s['pitch_min']}-{s['pitch_max']} ({pitch_name(s['pitch_min'])}-"
                   f"{pitch_name(s['pitch_max'])})")
  fpp = s["frames_per_piece"]
  fpp_text = ("-" if fpp["min"] is None else
              f"{fpp['min']:.0f}/{fpp['median']:.0f}/{fpp['max']:.0f}")
  return (f"{name:<6} {s['num_pieces']:>7d} {s['num_frames']:>9d} {s['num_notes']:>9d} "
          f"{pitch_range:>17} {s['mean_polyphony']:>9.2f} {100.0 * s['rest_rate']:>8.1f}% "
          f"{fpp_text:>28}")


def format_report(statistics: dict) -> str:
  """The human-readable statistics report."""
  lines = _summary_lines(statistics["summary"], statistics["settings"]) + [""]
  lines.append(f"{'split':<6} {'pieces':>7} {'frames':>9} {'notes':>9} {'pitch range':>17} "
               f"{'polyphony':>9} {'rest rate':>9} {'frames/piece min/median/max':>28}")
  rows = [(s, statistics["splits"][s]) for s in splits_lib.SPLITS]
  rows.append(("all", statistics["all"]))
  lines += [_split_row(name, s) for name, s in rows]
  duration = statistics["all"]["duration"]
  lines.append("")
  if duration["mean"] is not None:
    lines.append(f"frame durations (quarter notes, all splits): mean {duration['mean']:.3f}, "
                 f"median {duration['median']:.3f}, max {duration['max']:.3f}")
  lines.append(stats_lib.format_duration_histogram(statistics["all"]["duration_histogram"]))
  skipped = statistics["skipped"]
  lines += ["", f"skipped files: {len(skipped) or 'none'}"]
  lines += [f"  {s['name']}: {s['reason']}" for s in skipped]
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  define_settings_flags(DataConfig, flag_values)
  flags.DEFINE_string("stats_json", None, "Also write the statistics as JSON to this file.",
                      flag_values=flag_values)


def _check_stats_json(path: str | None) -> None:
  """Fails before any encoding when --stats_json cannot be written."""
  if not path:
    return
  if os.path.isdir(path):
    raise ValueError(f"--stats_json={path} is a folder; give a file name")
  workdir_lib.check_writable_dir(os.path.dirname(os.path.abspath(path)), "stats_json")


def main(flag_values: flags.FlagValues) -> None:
  cfg = from_flags(DataConfig, flag_values)
  workdir_lib.check_writable_dir(os.path.expanduser(cfg.cache_dir), "cache_dir")
  _check_stats_json(flag_values.stats_json)
  statistics = prepare_statistics(pipeline.load_dataset(cfg))
  # The report is this program's output: stdout, before anything is written.
  sys.stdout.write(format_report(statistics) + "\n")
  sys.stdout.flush()
  if flag_values.stats_json:
    try:
      os.makedirs(os.path.dirname(os.path.abspath(flag_values.stats_json)), exist_ok=True)
      with open(flag_values.stats_json, "w", encoding="utf-8") as f:
        json.dump(statistics, f, indent=2)
    except OSError as e:
      raise cli.Failure(f"cannot write --stats_json={flag_values.stats_json} "
                        f"({e.strerror or e}); the report is printed above") from e
    logging.info("wrote %s", flag_values.stats_json)


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()

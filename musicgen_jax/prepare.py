"""Builds the encoded-dataset cache and prints statistics of the data.

    python -m musicgen_jax.prepare --dataset=midi_dir --data_dir=DIR
    python -m musicgen_jax.prepare --dataset=bach_chorales
    python -m musicgen_jax.prepare --dataset=json --data_path=FILE

A second run reads the cache (it says 'cache hit'); a changed encoding setting
or a changed file re-encodes what it must.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging

from musicgen_jax.data import flags as data_flags
from musicgen_jax.data import pipeline
from musicgen_jax.data import splits as splits_lib
from musicgen_jax.data import stats as stats_lib

data_flags.define_data_flags()
flags.adopt_module_key_flags(data_flags)  # --help lists the data flags
_STATS_JSON = flags.DEFINE_string(
    "stats_json", None, "Also write the statistics as JSON to this file.")

_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch: int | None) -> str:
  """MIDI 60 -> 'C4'."""
  if pitch is None:
    return "-"
  return f"{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


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


def format_report(statistics: dict) -> str:
  """The human-readable statistics report."""
  summary = statistics["summary"]
  settings = statistics["settings"]
  is_json = summary["dataset"] == "json"
  unit = "piece" if is_json else "file"
  lines = [f"dataset: {summary['dataset']} ({summary['source']})"]
  if is_json:
    lines.append("settings: one frame of duration 1.0 per time step (the "
                 "encoding settings do not apply)")
  else:
    lines.append(
        "settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))
  if summary["cache_hit"]:
    lines.append(f"cache: hit, loaded in {summary['load_seconds']:.2f} s "
                 f"({summary['cache_path']})")
  else:
    lines.append(
        f"cache: built; encoded {summary['num_encoded']} {unit}(s) in "
        f"{summary['encode_seconds']:.2f} s ({summary['num_cached']} from "
        f"cache), loaded in {summary['load_seconds']:.2f} s "
        f"({summary['cache_path']})")
  counts = ("" if is_json else f"files: {summary['num_files']}, ")
  lines.append(
      f"{counts}pieces: {summary['num_pieces']}, "
      f"skipped: {summary['num_skipped']}; notes dropped: "
      f"{summary['dropped_out_of_range']} out of pitch range 21..126, "
      f"{summary['dropped_drums']} drums")
  lines.append("")
  header = (f"{'split':<6} {'pieces':>7} {'frames':>9} {'notes':>9} "
            f"{'pitch range':>17} {'polyphony':>9} {'rest rate':>9} "
            f"{'frames/piece min/median/max':>28}")
  lines.append(header)
  rows = [(s, statistics["splits"][s]) for s in splits_lib.SPLITS]
  rows.append(("all", statistics["all"]))
  for name, s in rows:
    if s["pitch_min"] is None:
      pitch_range = "-"
    else:
      pitch_range = (f"{s['pitch_min']}-{s['pitch_max']} "
                     f"({pitch_name(s['pitch_min'])}-"
                     f"{pitch_name(s['pitch_max'])})")
    fpp = s["frames_per_piece"]
    fpp_text = ("-" if fpp["min"] is None else
                f"{fpp['min']:.0f}/{fpp['median']:.0f}/{fpp['max']:.0f}")
    lines.append(
        f"{name:<6} {s['num_pieces']:>7d} {s['num_frames']:>9d} "
        f"{s['num_notes']:>9d} {pitch_range:>17} {s['mean_polyphony']:>9.2f} "
        f"{100.0 * s['rest_rate']:>8.1f}% {fpp_text:>28}")
  duration = statistics["all"]["duration"]
  lines.append("")
  if duration["mean"] is not None:
    lines.append(
        f"frame durations (quarter notes, all splits): mean "
        f"{duration['mean']:.3f}, median {duration['median']:.3f}, max "
        f"{duration['max']:.3f}")
  lines.append(stats_lib.format_duration_histogram(
      statistics["all"]["duration_histogram"]))
  skipped = statistics["skipped"]
  lines.append("")
  lines.append(f"skipped files: {len(skipped) or 'none'}")
  for s in skipped:
    lines.append(f"  {s['name']}: {s['reason']}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    cfg = data_flags.data_config_from_flags(flags.FLAGS)
    dataset = pipeline.load_dataset(cfg)
  except (ValueError, FileNotFoundError, ImportError) as e:
    # Bad flags or unusable data: the message says what to change.
    raise app.UsageError(str(e)) from e
  statistics = prepare_statistics(dataset)
  # The report is this program's output, so it goes to stdout.
  sys.stdout.write(format_report(statistics) + "\n")
  if _STATS_JSON.value:
    with open(_STATS_JSON.value, "w", encoding="utf-8") as f:
      json.dump(statistics, f, indent=2)
    logging.info("wrote %s", _STATS_JSON.value)


def run():
  app.run(main)


if __name__ == "__main__":
  run()

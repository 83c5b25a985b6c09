r"""Shipped models before and after the new frame: where their onsets fall, and how they sound.

    git archive 3d489f9 musicgen_jax/pretrained_models | tar -x -C runs/frame_before
    python -m experiments.run_frame_models \
        --before_dir=runs/frame_before/musicgen_jax/pretrained_models \
        --report_dir=experiments/results/frame_models

3d489f9 is the last commit whose shipped models use the study's frame (every note cut at the next
onset, the pedal ignored, no metre); the models shipped now (note lengths, pedal, metre)
are the "after". For each model and each of --num_seeds sampling seeds, --num_samples
continuations of --num_frames frames are sampled from the same prime (the shipped
prime.mid, read with each model's own frame) at temperature 1. Where their onsets fall
within the beat (`music_stats.onset_positions`, the prime left out) is compared by total
variation distance with the model's training split and its held-out test split, beside the
distance between those two real splits; one seed's 32 samples move it by about 0.02, so
the report gives the mean over seeds and their range. The first --page_samples of each
model (first seed) are rendered beside each other on a listening page (index.html), which
is then opened in headless Chromium when one is installed (`pages check`). Writes
frame_models.md and the page; about 4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments import runner
from musicgen_jax import generate, music_stats, pages, pretrained
from musicgen_jax.data import load_dataset

FLAGS = flags.FLAGS
flags.DEFINE_string("before_dir", None, "Folder of the model folders shipped before (see the "
                    "module docstring).", required=True)
flags.DEFINE_list("models", ["piano", "chorales"], "Models found both in --before_dir and in "
                  "the package.")
flags.DEFINE_integer("num_samples", 32, "Continuations per model (the histograms use all).")
flags.DEFINE_integer("num_frames", 256, "Frames sampled after the prime.")
flags.DEFINE_integer("page_samples", 2, "Continuations per model on the page.")
flags.DEFINE_integer("seed", 0, "First sampling seed, the same for both versions (the page's).")
flags.DEFINE_integer("num_seeds", 4, "Sampling seeds from --seed on: each draws --num_samples "
                     "continuations; the distances are given per seed (mean, range).")
flags.DEFINE_string("runs_dir", os.path.join(runner.REPO, "runs", "frame_models"),
                    "Where all samples are written.")
flags.DEFINE_string("report_dir", os.path.join(runner.REPO, "experiments", "results",
                                               "frame_models"), "Report and page.")
VERSIONS = (("before", "the study's frame: every note cut at the next onset, no pedal, no metre"),
            ("after", "note lengths, the sustain pedal and metre"))


def sample_version(name: str, version: str, model: str, seed: int) -> generate.SampleResult:
  """Samples `model` (a shipped name or a model folder) from the shipped prime."""
  out = os.path.join(FLAGS.runs_dir, name, version, f"seed_{seed}")
  return generate.sample_pretrained(
      model, out, overwrite=True, prime_midi=pretrained.prime_path(name),
      num_frames=FLAGS.num_frames, num_samples=FLAGS.num_samples, seed=seed,
      audio="none", plot=seed == FLAGS.seed)


def measure(results: list, real: dict, spq: int) -> dict:
  """Onset-position distances per sampling seed (mean, min, max) and held notes."""
  tv = {split: [] for split in real}
  sounding, on_the_beat = [], []
  for result in results:
    skip = result.record["prime"]["frames"]
    positions = music_stats.onset_positions(list(result.frames), spq, skip=skip)
    for split, histogram in real.items():
      tv[split].append(music_stats.total_variation(positions, histogram))
    on_the_beat.append(float(positions[0]))
    sounding.append(music_stats.sounding_at_onsets(list(result.frames), spq, skip=skip))
  summary = lambda v: {"mean": float(np.mean(v)), "min": float(np.min(v)),
                       "max": float(np.max(v)), "per_seed": [float(x) for x in v]}
  return {"vs_train": summary(tv["train"]), "vs_test": summary(tv["test"]),
          "on_the_beat": float(np.mean(on_the_beat)), "sounding": float(np.mean(sounding))}


def compare(name: str) -> dict:
  """The onset-position distances of both versions of `name`, and the page entries."""
  run = pretrained.load(name)
  spq = run.config.data.steps_per_quarter
  dataset = load_dataset(run.config.data)
  real = {split: music_stats.onset_positions(dataset[split], spq) for split in ("train", "test")}
  row = {"train_vs_test": music_stats.total_variation(real["train"], real["test"])}
  entries = []
  seeds = range(FLAGS.seed, FLAGS.seed + FLAGS.num_seeds)
  for version, text in VERSIONS:
    model = name if version == "after" else os.path.join(FLAGS.before_dir, name)
    results = [sample_version(name, version, model, seed) for seed in seeds]
    described = pretrained.info(model)
    row[version] = dict(measure(results, real, spq), test_nll=described["test_nll"],
                        test_nll_notes=described["test_nll_notes"],
                        num_params=described["num_params"])
    sounds = pages.copy_samples(os.path.dirname(results[0].midi_paths[0]), FLAGS.report_dir,
                                f"{name}_{version}", FLAGS.page_samples)
    roll = f"{name}_{version}/sample_000.png"
    entries.append(pages.Entry(
        f"{name}, {version}: {text}", audio=sounds,
        roll=roll if os.path.exists(os.path.join(FLAGS.report_dir, roll)) else None,
        numbers={"test NLL (notes + duration)": described["test_nll"],
                 "onset positions, TV vs training split":
                     f"{row[version]['vs_train']['mean']:.3f}"}))
  row["on_the_beat_train"] = float(real["train"][0])
  row["sounding_train"] = music_stats.sounding_at_onsets(dataset["train"], spq)
  return {"row": row, "entries": entries}


def report(rows: dict) -> str:
  lines = ["# The shipped models before and after note lengths, the pedal and metre", "",
           f"{FLAGS.num_samples} samples of {FLAGS.num_frames} frames per model and sampling "
           f"seed, {FLAGS.num_seeds} seeds ({FLAGS.seed} on), from the shipped prime at "
           "temperature 1, the prime left out; distances are the mean over seeds [min, max]. "
           "Onset positions: each onset's grid step modulo a quarter, placed by the frames' "
           "metre where they have it (`music_stats.onset_positions`), compared by total "
           "variation distance (TV) with the real pieces of the model's training and test "
           "splits.", "",
           "Notes sounding at an onset: those struck there and those still held "
           "(`music_stats.sounding_at_onsets`); the study's frame holds none. Each test NLL "
           "is per frame of the model's own frame: where the pedal changes the number of "
           "frames (piano: a rest under a held pedal is no longer a frame of its own), "
           "before and after are not strictly comparable.", "",
           "| model | frame | TV vs training split | TV vs test split | on the beat | "
           "notes sounding at an onset | test NLL (notes + duration) | parameters |",
           "|---|---|---|---|---|---|---|---|"]
  for name, row in rows.items():
    for version, _ in VERSIONS:
      r = row[version]
      spread = lambda d: f"{d['mean']:.3f} [{d['min']:.3f}, {d['max']:.3f}]"
      lines.append(f"| {name} | {version} | {spread(r['vs_train'])} | {spread(r['vs_test'])} | "
                   f"{r['on_the_beat']:.1%} | {r['sounding']:.2f} | {r['test_nll']:.3f} | "
                   f"{r['num_params']:,} |")
    lines.append(f"| {name} | (training split vs test split) | | {row['train_vs_test']:.3f} | "
                 f"{row['on_the_beat_train']:.1%} (training split) | "
                 f"{row['sounding_train']:.2f} (training split) | | |")
  lines += ["", f"Made by `{runner.invocation()}` on {runner.machine()}, {runner.now()}.", ""]
  return "\n".join(lines)


def main(argv):
  del argv
  os.makedirs(FLAGS.report_dir, exist_ok=True)
  compared = {name: compare(name) for name in FLAGS.models}
  rows = {name: c["row"] for name, c in compared.items()}
  with open(os.path.join(FLAGS.report_dir, "frame_models.json"), "w") as f:
    json.dump(rows, f, indent=2)
  with open(os.path.join(FLAGS.report_dir, "frame_models.md"), "w") as f:
    f.write(report(rows))
  intro = ("The same prime continued by each shipped model as it was (the study's frame) and "
           "as it is now (note lengths, the sustain pedal, metre), sampled with the same seed. "
           "Made by python -m experiments.run_frame_models.")
  sections = [(name, c["entries"]) for name, c in compared.items()]
  page = pages.write(FLAGS.report_dir, pages.music_page(
      "The shipped models before and after the new frame", intro, [], sections,
      report="frame_models.md"))
  print(page)
  if pages.find_browser():
    players = pages.check_in_browser(page, os.path.join(FLAGS.report_dir, "screenshot.png"))
    playing = [p for p in players if p["duration_s"]]
    print(f"{len(playing)} of {len(players)} audio players play in headless Chromium")


if __name__ == "__main__":
  app.run(main)

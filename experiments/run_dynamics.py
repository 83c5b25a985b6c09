r"""Dynamics on and off: the same model trained with and without velocity in the frame.

    python -m experiments.run_dynamics --model_flags=experiments/study/transformer_48.flags \
        --note_head=nade --velocity_bins=16 --report_dir=experiments/results/dynamics

Trains the study configuration twice (velocity_bins 0 and N, everything else equal),
scores both on the test split (the note NLL must not suffer from the added head), scores
the velocity head against a no-context baseline (the training split's velocity classes),
samples continuations of the Polonaise's first frames with dynamics, compares their
velocity statistics with held-out pieces, renders them, and writes a report and a page.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags, logging

from experiments import runner
from musicgen_jax import pages

FLAGS = flags.FLAGS
flags.DEFINE_string("model_flags", os.path.join(runner.REPO, "experiments", "study",
                                                "transformer_48.flags"),
                    "The study flagfile to train with and without dynamics.")
flags.DEFINE_string("note_head", "nade", "Note head of both runs.")
flags.DEFINE_integer("velocity_bins", 16, "Velocity classes of the run with dynamics.")
flags.DEFINE_string("data_dir", None, "Piano MIDI folder (default: the flagfile's).")
flags.DEFINE_string("runs_dir", os.path.join(runner.REPO, "runs", "dynamics"), "Workdirs.")
flags.DEFINE_string("report_dir", os.path.join(runner.REPO, "experiments", "results",
                                               "dynamics"), "Report and page.")
flags.DEFINE_integer("num_samples", 8, "Continuations sampled (statistics use all).")
flags.DEFINE_integer("num_frames", 256, "Frames sampled after the prime.")
PRIME_FILE, PRIME_FRAMES = "chpn_op53.mid", 10
PAGE_SAMPLES = 2  # continuations per run on the page


def velocity_baseline(train_pieces, test_pieces, bins: int) -> float:
  """Test nll_velocity (nats per predicted frame) of the training split's class frequencies."""
  from musicgen_jax.encoding import VELOCITY_INDEX  # pylint: disable=g-import-not-at-top
  from musicgen_jax.models.distributions import velocity_bin  # pylint: disable=g-import-not-at-top
  train = np.concatenate([p.frames[1:, VELOCITY_INDEX] for p in train_pieces])
  test = np.concatenate([p.frames[1:, VELOCITY_INDEX] for p in test_pieces])
  counts = np.bincount(velocity_bin(train[train > 0], bins, xp=np), minlength=bins) + 0.5
  log_p = np.log(counts / counts.sum())
  sounding = test > 0
  return float(-log_p[velocity_bin(test[sounding], bins, xp=np)].sum() / len(test))


def train_and_score(name: str, bins: int, data_dir: str) -> dict:
  from musicgen_jax import evaluate, generate, music_stats  # pylint: disable=g-import-not-at-top
  from musicgen_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(FLAGS.runs_dir, name)
  args = [f"--flagfile={FLAGS.model_flags}", f"--note_head={FLAGS.note_head}",
          f"--velocity_bins={bins}", f"--data_dir={data_dir}", f"--workdir={workdir}"]
  _, seconds = runner.run_program("musicgen_jax.train", args, os.path.join(workdir, "train.log"))
  run = workdir_lib.load_run(workdir)
  dataset = load_dataset(run.config.data)
  test = evaluate.evaluate_pieces(run.config.model, run.params, dataset.test)
  samples = os.path.join(workdir, "samples")
  sampled = generate.sample_workdir(
      workdir, samples, overwrite=True, num_samples=FLAGS.num_samples,
      num_frames=FLAGS.num_frames, prime_midi=os.path.join(data_dir, PRIME_FILE),
      prime_frames=PRIME_FRAMES)
  stats = music_stats.compare_midi_dir(
      samples, dataset.test, steps_per_quarter=run.config.data.steps_per_quarter,
      duration_mode=run.config.data.duration_mode,
      max_duration_steps=run.config.model.max_duration_steps)
  verdict = runner.judge(list(sampled.frames[:, PRIME_FRAMES:]), dataset.test,
                         FLAGS.num_frames)
  return {"name": name, "velocity_bins": bins, "command": runner.command_text(
      "musicgen_jax.train", args), "train_seconds": seconds, "best_step": run.step,
          "test": test, "music_stats": stats, "judge": verdict, "samples": samples,
          "dataset": dataset}


def write(rows: list[dict], baseline: float, meta: dict, prime_file: str) -> None:
  os.makedirs(FLAGS.report_dir, exist_ok=True)
  off, on = rows
  features = on["music_stats"]["features"]
  lines = ["# Dynamics: velocity in the frame, on and off", "",
           f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}).", "",
           f"The same configuration (`{os.path.relpath(FLAGS.model_flags, runner.REPO)}`, "
           f"{FLAGS.note_head} head) trained without dynamics and with --velocity_bins="
           f"{FLAGS.velocity_bins}; test split of piano-midi, nats per predicted frame.", "",
           "| run | test nll (notes + duration) | nll_notes | nll_velocity | nll_total | "
           "best step |", "|---|---|---|---|---|---|"]
  for r in rows:
    t = r["test"]
    lines.append(f"| {r['name']} | {t['nll']:.3f} | {t['nll_notes']:.3f} | "
                 f"{t['nll_velocity']:.3f} | {t['nll_total']:.3f} | {r['best_step']} |")
  change = on["test"]["nll_notes"] - off["test"]["nll_notes"]
  lines += ["", f"The note NLL changes by {change:+.3f} nats per frame with dynamics on "
            f"(allowed: +0.05). The velocity head scores {on['test']['nll_velocity']:.3f} "
            f"against {baseline:.3f} for the training split's velocity classes with no "
            "context (both per predicted frame, rests costing nothing).", "",
            "## Velocity statistics of the continuations against held-out pieces", "",
            "| feature | overlap | generated mean | held-out mean |", "|---|---|---|---|"]
  for name in ("mean_velocity", "velocity_spread", "velocity_phrase_change"):
    f = features.get(name, {})
    lines.append(f"| {name} | {runner.fmt(f.get('overlap'), 2)} | "
                 f"{runner.fmt(f.get('mean_generated'), 1)} | {runner.fmt(f.get('mean_real'), 1)} |")
  lines += ["", "The judge (`musicgen_jax.judge`, 0.5 = a random forest cannot tell the "
            "continuations from held-out excerpts): " + "; ".join(
                f"{r['name']} {runner.judge_cell(r.get('judge'))}" for r in rows) + ".", ""]
  with open(os.path.join(FLAGS.report_dir, "results.md"), "w") as f:
    f.write("\n".join(lines))
  entries = []
  for r in rows:
    sounds = pages.copy_samples(r["samples"], FLAGS.report_dir, r["name"], PAGE_SAMPLES)
    entries.append(pages.Entry(r["name"], numbers={"nll_notes": f"{r['test']['nll_notes']:.3f}",
                                                   "nll_velocity": f"{r['test']['nll_velocity']:.3f}"},
                               roll=f"{r['name']}/sample_000.png", audio=sounds))
  references = pages.references(FLAGS.report_dir, prime_file, PRIME_FRAMES, on["dataset"].test,
                                PRIME_FRAMES + FLAGS.num_frames, with_velocity=True)
  page = pages.music_page("Dynamics on and off", f"Continuations of the Polonaise's first {PRIME_FRAMES} "
                          "frames by the same model without and with velocity; with dynamics "
                          "the opacity of a note in the piano roll is its velocity.", references,
                          [("Runs", entries)], report="results.md")
  pages.write(FLAGS.report_dir, page)
  with open(os.path.join(FLAGS.report_dir, "results.json"), "w") as f:
    json.dump({"meta": meta, "baseline_nll_velocity": baseline,
               "runs": [{k: v for k, v in r.items() if k != "dataset"} for r in rows]}, f,
              indent=1, default=str)


def main(argv):
  del argv
  data_dir = os.path.abspath(os.path.join(runner.REPO, FLAGS.data_dir or runner.parse_flagfile(
      FLAGS.model_flags)["data_dir"]))
  meta = {"command": runner.invocation(), "date": runner.now(), "machine": runner.machine()}
  rows = [train_and_score("without_dynamics", 0, data_dir),
          train_and_score(f"with_dynamics_{FLAGS.velocity_bins}", FLAGS.velocity_bins, data_dir)]
  dataset = rows[1]["dataset"]
  baseline = velocity_baseline(dataset.train, dataset.test, FLAGS.velocity_bins)
  logging.info("nll_velocity %.3f, baseline %.3f", rows[1]["test"]["nll_velocity"], baseline)
  write(rows, baseline, meta, os.path.join(data_dir, PRIME_FILE))
  print(os.path.join(FLAGS.report_dir, "results.md"))


if __name__ == "__main__":
  app.run(main)

"""The study's grid: train, prime, sample and score every configuration; one report.

    # the full grid: 30 epochs, both note heads (32 runs; hours on a 2-core CPU)
    python -m experiments.run_study --runs_dir=runs/study --report_dir=experiments/results/study
    # a quick look: fewer epochs
    python -m experiments.run_study --quick --report_dir=runs/study_quick/report

For each flagfile experiments/study/<model>_<seq_len>.flags (rnn, lstm, bilstm,
transformer x 24, 48, 64, 200) and each --note_heads it
  1. trains: `python -m musicgen_jax.train --flagfile=F --note_head=H --workdir=W`
     (a finished run is reused while its flags are unchanged);
  2. samples --num_samples continuations of the first --prime_frames frames of
     chpn_op53.mid (Chopin, Polonaise Op. 53) from the best-by-validation checkpoint;
  3. scores the test split (NLL by the evaluation protocol) and compares the samples'
     music statistics with test-split excerpts of the same length (overlap of intra- and
     inter-set distance distributions, Yang & Lerch 2018);
and writes REPORT/results.md, results.json, loss_curves.png and <run>/sample_000.{mid,png}.
The report also gives two references: the test NLL of always predicting the average
training frame, and the overlap of held-out excerpts with the training pieces (what a
model that writes like the corpus reaches).
"""

from __future__ import annotations

import json
import os
import statistics
import time

from absl import app, flags, logging

from experiments import runner
from musicgen_jax import pages

MODELS = ("rnn", "lstm", "bilstm", "transformer")
SEQ_LENS = (24, 48, 64, 200)
NOTE_HEADS = ("independent", "nade")
PRIME_FILE = "chpn_op53.mid"
FLAG_DIR = os.path.join(runner.REPO, "experiments", "study")

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS), "Models of the grid.")
flags.DEFINE_list("seq_lens", [str(s) for s in SEQ_LENS], "Sequence lengths of the grid.")
flags.DEFINE_list("note_heads", list(NOTE_HEADS), "Note heads of the grid.")
flags.DEFINE_bool("quick", False, "Train --quick_epochs instead of the flagfiles' epochs.")
flags.DEFINE_float("quick_epochs", 3.0, "Epochs per configuration with --quick.")
flags.DEFINE_string("data_dir", None, "Piano MIDI folder (default: the flagfiles' --data_dir).")
flags.DEFINE_string("runs_dir", os.path.join(runner.REPO, "runs", "study"),
                    "Workdirs go to RUNS/<model>_<seq_len>_<head>.")
flags.DEFINE_string("report_dir", None, "Where the report goes (default RUNS/report).")
flags.DEFINE_integer("num_frames", 256, "Frames sampled after the prime.")
flags.DEFINE_integer("num_samples", 8, "Samples per configuration (music statistics use all).")
flags.DEFINE_integer("prime_frames", 10, "Frames of the prime piece given to the model.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_integer("sample_seed", 0, "Sampling seed.")
flags.DEFINE_bool("report_only", False, "Train nothing: write the report from finished runs.")


def flagfile(model: str, seq_len: int) -> str:
  return os.path.join(FLAG_DIR, f"{model}_{seq_len}.flags")


def train_args(model: str, seq_len: int, head: str, workdir: str, data_dir: str) -> list[str]:
  args = [f"--flagfile={os.path.relpath(flagfile(model, seq_len), runner.REPO)}",
          f"--note_head={head}", f"--data_dir={data_dir}", f"--workdir={workdir}"]
  if FLAGS.quick:
    args += [f"--num_epochs={FLAGS.quick_epochs:g}", "--eval_every=100",
             "--checkpoint_every=100", "--log_every=20", "--warmup_steps=20"]
  return args


def sample_and_score(workdir: str, prime: str, test_pieces) -> dict:
  """Samples the Polonaise continuation and scores the test split (best checkpoint)."""
  from musicgen_jax import evaluate, generate, music_stats  # pylint: disable=g-import-not-at-top
  from musicgen_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  samples = os.path.join(workdir, "samples")
  sampled = generate.sample_workdir(
      workdir, samples, overwrite=True, num_frames=FLAGS.num_frames,
      num_samples=FLAGS.num_samples, temperature=FLAGS.temperature, seed=FLAGS.sample_seed,
      prime_midi=prime, prime_frames=FLAGS.prime_frames)
  run = workdir_lib.load_run(workdir)
  start = time.perf_counter()
  test = evaluate.evaluate_pieces(run.config.model, run.params, test_pieces)
  test["seconds"] = time.perf_counter() - start
  stats = music_stats.compare_midi_dir(
      samples, test_pieces, steps_per_quarter=run.config.data.steps_per_quarter,
      duration_mode=run.config.data.duration_mode,
      max_duration_steps=run.config.model.max_duration_steps)
  verdict = runner.judge(list(sampled.frames[:, FLAGS.prime_frames:]), test_pieces,
                         FLAGS.num_frames)
  return {"best_step": run.step, "test": test, "music_stats": stats, "judge": verdict,
          "sample": sampled.record}


def run_one(model: str, seq_len: int, head: str, data_dir: str, test_pieces,
            results: runner.Results) -> dict:
  name = f"{model}_{seq_len}_{head}"
  workdir = os.path.join(FLAGS.runs_dir, name)
  args = train_args(model, seq_len, head, workdir, data_dir)
  key = runner.flagfile_digest(flagfile(model, seq_len)) + " " + " ".join(args)
  done = results.load(workdir, key)
  if done is not None or FLAGS.report_only:
    if done is None:
      raise FileNotFoundError(f"--report_only: {name} has no result in {workdir}")
    return done
  trained, seconds = runner.run_program("musicgen_jax.train", args,
                                        os.path.join(workdir, "train.log"))
  records = runner.metrics_records(workdir)
  rates = [r["frames_per_s"] for r in records if "frames_per_s" in r][1:]
  result = {"name": name, "model": model, "seq_len": seq_len, "note_head": head,
            "command": runner.command_text("musicgen_jax.train", args),
            "num_steps": trained.get("step"), "train_seconds": seconds,
            "frames_per_s": statistics.median(rates) if rates else None,
            **sample_and_score(workdir, os.path.join(data_dir, PRIME_FILE), test_pieces),
            "curve": [{k: r[k] for k in ("step", "train_loss", "valid_nll") if k in r}
                      for r in records]}
  return results.save(workdir, key, result)


def references(dataset, length: int) -> dict:
  """The no-context NLL baseline and the held-out-vs-train overlap ceiling."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from musicgen_jax import music_stats  # pylint: disable=g-import-not-at-top
  from musicgen_jax.encoding import (DURATION_INDEX, NUM_NOTES,  # pylint: disable=g-import-not-at-top
                                     duration_classes)
  train = np.concatenate([p.frames[1:] for p in dataset.train])
  test = np.concatenate([p.frames[1:] for p in dataset.test])
  freq = np.clip(train[:, :NUM_NOTES].mean(axis=0), 1e-6, 1 - 1e-6)
  notes = test[:, :NUM_NOTES]
  nll_notes = float(-(notes * np.log(freq) + (1 - notes) * np.log1p(-freq)).sum(1).mean())
  classes = lambda x: duration_classes(x[:, DURATION_INDEX], 12, 96)
  counts = np.bincount(classes(train), minlength=96) + 0.5
  nll_duration = float(-np.log(counts / counts.sum())[classes(test)].mean())
  held_out = music_stats.segments([p.frames for p in dataset.test], length)
  ceiling = music_stats.compare_sets(held_out, dataset.train, segment_frames=length)
  return {"average_frame": {"nll": nll_notes + nll_duration, "nll_notes": nll_notes,
                            "nll_duration": nll_duration},
          "held_out_vs_train_overlap": ceiling["mean_overlap"],
          "judge_floor": runner.judge(dataset.train, dataset.test, FLAGS.num_frames)}


def plot_curves(rows: list[dict], path: str) -> None:
  """Validation NLL against training steps, one panel per model, both heads."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  models = [m for m in MODELS if any(r["model"] == m for r in rows)]
  seq_lens = sorted({r["seq_len"] for r in rows})
  fig = Figure(figsize=(4.5 * len(models), 3.8), dpi=90)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
  for ax, model in zip(axes, models):
    for r in (r for r in rows if r["model"] == model):
      pts = [(c["step"], c["valid_nll"]) for c in r["curve"] if "valid_nll" in c]
      if pts:
        style = "-" if r["note_head"] == "nade" else "--"
        ax.plot(*zip(*pts), style, color=f"C{seq_lens.index(r['seq_len']) % 10}", lw=1.2,
                label=f"{r['seq_len']} {r['note_head']}")
    ax.set_title(model)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("validation NLL (nats per frame)")
  axes[-1].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path)


def _grid(rows: list[dict], key) -> list[str]:
  seq_lens = sorted({r["seq_len"] for r in rows})
  lines = ["| model | head | " + " | ".join(f"seq_len {s}" for s in seq_lens) + " |",
           "|---|---|" + "---|" * len(seq_lens)]
  for model in MODELS:
    for head in NOTE_HEADS:
      cells = {r["seq_len"]: key(r) for r in rows if r["model"] == model and
               r["note_head"] == head}
      if cells:
        lines.append(f"| {model} | {head} | " + " | ".join(
            runner.fmt(cells.get(s), 2) for s in seq_lens) + " |")
  return lines


def write_report(rows: list[dict], report_dir: str, meta: dict) -> None:
  os.makedirs(report_dir, exist_ok=True)
  refs = meta["references"]
  lines = [f"# The study's grid{' (quick)' if meta['quick'] else ''}", "",
           f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}; load average "
           f"{meta['load_start']} at the start; {meta['wall_minutes']:.0f} min wall).", "",
           f"Data: {meta['data']}. Test NLL in nats per frame by the evaluation protocol, "
           "from the checkpoint with the best validation NLL. No context (the average "
           f"training frame every time): {refs['average_frame']['nll']:.2f}.", "",
           "## Test NLL", ""] + _grid(rows, lambda r: r["test"]["nll"])
  lines += ["", "## Music statistics: mean overlap with held-out excerpts", "",
            f"{meta['num_samples']} samples of {meta['num_frames']} frames after the first "
            f"{meta['prime_frames']} frames of {PRIME_FILE}, against test excerpts of the "
            "same length; 1 = as close to the test music as it is to itself. Held-out "
            f"excerpts against the training pieces (the ceiling): "
            f"{runner.fmt(refs['held_out_vs_train_overlap'], 2)}.", ""]
  lines += _grid(rows, lambda r: r["music_stats"]["mean_overlap"])
  lines += ["", "The judge (`musicgen_jax.judge`): balanced accuracy of a random forest telling "
            f"the continuations from test excerpts of {meta['num_frames']} frames (0.5 = it "
            "cannot); its floor, training excerpts against test excerpts: "
            f"{runner.judge_cell(refs.get('judge_floor'))}.", ""]
  lines += ["", "## Every run", "", "| run | steps (best) | test NLL | notes | duration | "
            "overlap | judge | train min | frames/s |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    t = r["test"]
    lines.append(f"| {r['name']} | {r['num_steps']} ({r['best_step']}) | {t['nll']:.3f} | "
                 f"{t['nll_notes']:.3f} | {t['nll_duration']:.3f} | "
                 f"{runner.fmt(r['music_stats']['mean_overlap'], 3)} | "
                 f"{runner.judge_cell(r.get('judge'))} | {r['train_seconds'] / 60:.1f} | "
                 f"{runner.fmt(r['frames_per_s'], 0)} |")
  lines += ["", "Files: results.json, loss_curves.png, <run>/sample_000.mid and .png (the "
            "prime shaded grey).", ""]
  with open(os.path.join(report_dir, "results.md"), "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(report_dir, "results.json"), "w") as f:
    json.dump({"meta": meta, "results": rows}, f, indent=1)
    f.write("\n")
  plot_curves(rows, os.path.join(report_dir, "loss_curves.png"))


PAGE_SAMPLES = 1  # continuations per run on the listening page (32 runs: audio kept small)


def write_page(rows: list[dict], report_dir: str, references: list) -> str:
  sections = []
  for model in MODELS:
    entries = []
    for r in (r for r in rows if r["model"] == model):
      folder = r["name"]
      sounds = pages.copy_samples(os.path.join(FLAGS.runs_dir, folder, "samples"), report_dir,
                                  folder, PAGE_SAMPLES)
      entries.append(pages.Entry(
          f"{model}, seq_len {r['seq_len']}, {r['note_head']} head",
          numbers={"test NLL": f"{r['test']['nll']:.2f}",
                   "overlap": runner.fmt(r["music_stats"]["mean_overlap"], 2),
                   "judge": runner.judge_cell(r.get("judge"))},
          roll=f"{folder}/sample_000.png", audio=sounds))
    if entries:
      sections.append((model, entries))
  page = pages.music_page(
      "The study's grid: continuations of the Polonaise", "Every model continues the first "
      f"{FLAGS.prime_frames} frames of Chopin's Polonaise Op. 53 ({FLAGS.num_frames} frames, "
      f"temperature {FLAGS.temperature:g}); the piano roll shows the first continuation, the "
      "prime in grey. Numbers: test NLL (nats per frame) and the mean overlap of the music "
      "statistics with held-out excerpts (1 = as close as real music).", references,
      sections, report="results.md")
  return pages.write(report_dir, page)


def main(argv):
  del argv
  from musicgen_jax.data import STUDY_FRAME, DataConfig, load_dataset  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  first = runner.parse_flagfile(flagfile(FLAGS.models[0], int(FLAGS.seq_lens[0])))
  data_dir = os.path.abspath(os.path.join(runner.REPO, os.path.expanduser(
      FLAGS.data_dir or first["data_dir"])))
  if not os.path.exists(os.path.join(data_dir, PRIME_FILE)):
    raise app.UsageError(f"{PRIME_FILE} not found in {data_dir}; set --data_dir to the "
                         "piano-midi folder")
  dataset = load_dataset(DataConfig(dataset="midi_dir", data_dir=data_dir, **STUDY_FRAME))
  meta = {"command": runner.invocation(), "date": runner.now(), "machine": runner.machine(),
          "load_start": runner.load_average(), "quick": FLAGS.quick,
          "data": f"{os.path.relpath(data_dir, runner.REPO)} ({len(dataset.train)} training "
                  f"pieces, {sum(p.num_frames for p in dataset.train)} frames; "
                  f"{len(dataset.test)} test pieces)",
          "num_samples": FLAGS.num_samples, "num_frames": FLAGS.num_frames,
          "prime_frames": FLAGS.prime_frames, "temperature": FLAGS.temperature}
  results, rows = runner.Results("study_result"), []
  for model in FLAGS.models:
    for seq_len in map(int, FLAGS.seq_lens):
      for head in FLAGS.note_heads:
        r = run_one(model, seq_len, head, data_dir, dataset.test, results)
        logging.info("%s: test NLL %.3f, overlap %s, %.1f min", r["name"], r["test"]["nll"],
                     r["music_stats"]["mean_overlap"], r["train_seconds"] / 60)
        rows.append(r)
  meta["references"] = references(dataset, FLAGS.prime_frames + FLAGS.num_frames)
  meta["wall_minutes"] = (time.perf_counter() - start) / 60
  report_dir = FLAGS.report_dir or os.path.join(FLAGS.runs_dir, "report")
  write_report(rows, report_dir, meta)
  reference_entries = pages.references(report_dir, os.path.join(data_dir, PRIME_FILE),
                                       FLAGS.prime_frames, dataset.test,
                                       FLAGS.prime_frames + FLAGS.num_frames)
  write_page(rows, report_dir, reference_entries)
  print(os.path.join(report_dir, "results.md"))


if __name__ == "__main__":
  app.run(main)

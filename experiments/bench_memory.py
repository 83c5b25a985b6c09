r"""Benchmark: the training command's resident memory and throughput as the corpus grows.

    python -m experiments.bench_memory --copies=1,10,100 [--code_dir=DIR --name=dense]

Builds corpora of 1x, 10x, 100x the piano-midi files (copies under other names, hard
links where the file system allows: each copy is encoded and held as a piece of its own),
encodes each once with `prepare`, then runs the same short `train` command on each and reads
the process's peak resident memory (`/usr/bin/time -f %M`) and its frames/s (metrics.jsonl,
the log windows after the first, which holds the compile). --code_dir runs the programs of
another checkout of the project (an earlier commit, say) on the same corpora and caches'
folders, so two versions compare in one run. Writes memory_<name>.md and .json in --out_dir.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from absl import app, flags

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("data_dir", os.path.join(_REPO_ROOT, "..", "shared", "data",
                                               "piano-midi"), "The corpus copied.")
  flags.DEFINE_list("copies", ["1", "10", "100"], "Corpus sizes, in copies of --data_dir.")
  flags.DEFINE_string("work_dir", "/tmp/musicgen_bench_memory", "Corpora, caches and runs.")
  flags.DEFINE_string("code_dir", _REPO_ROOT, "The checkout whose programs run.")
  flags.DEFINE_string("name", "sparse", "Names the report (memory_NAME.md).")
  flags.DEFINE_integer("num_steps", 300, "Training steps per run.")
  flags.DEFINE_integer("shard_files", 0, "Passed to prepare and train: the corpus in shards "
                       "of N files (0 = one cache file).")
  flags.DEFINE_string("out_dir", os.path.join(_REPO_ROOT, "experiments", "results", "memory"),
                      "Where the report goes.")


TRAIN_FLAGS = ("--model=lstm", "--hidden_size=64", "--num_layers=1", "--note_head=independent",
               "--seq_len=48", "--batch_size=32", "--log_every=50", "--checkpoint_every=100000",
               "--transpose_range=5")


def corpus(copies: int) -> str:
  """A folder of `copies` copies of every file of --data_dir, made once."""
  folder = os.path.join(FLAGS.work_dir, f"corpus_{copies}x")
  done = os.path.join(folder, ".complete")
  if os.path.exists(done):
    return folder
  files = sorted(f for f in os.listdir(FLAGS.data_dir) if f.lower().endswith((".mid", ".midi")))
  for k in range(copies):
    target = os.path.join(folder, f"copy_{k:0{max(3, len(str(copies - 1)))}d}")
    os.makedirs(target, exist_ok=True)
    for f in files:
      dst = os.path.join(target, f)
      if not os.path.exists(dst):
        try:
          os.link(os.path.join(FLAGS.data_dir, f), dst)
        except OSError:
          with open(os.path.join(FLAGS.data_dir, f), "rb") as src, open(dst, "wb") as out:
            out.write(src.read())
  open(done, "w").close()
  return folder


def _run(args: list[str]) -> tuple[float, int, str]:
  """(seconds, peak resident KiB, output) of `python -m ...` in --code_dir."""
  start = time.perf_counter()
  done = subprocess.run(["/usr/bin/time", "-f", "peak_rss_kib=%M", sys.executable, "-m", *args],
                        cwd=FLAGS.code_dir, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if done.returncode != 0:
    raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
  peak = int(done.stderr.rsplit("peak_rss_kib=", 1)[1].split()[0])
  return seconds, peak, done.stdout + done.stderr


def measure(copies: int) -> dict:
  data = corpus(copies)
  cache = os.path.join(FLAGS.work_dir, f"cache_{copies}x")
  source = [f"--dataset=midi_dir", f"--data_dir={data}", f"--cache_dir={cache}",
            "--velocity_bins=16", f"--shard_files={FLAGS.shard_files}"]
  stats_path = os.path.join(cache, "stats.json")
  prepare_s, prepare_kib, _ = _run(["musicgen_jax.prepare", *source, f"--stats_json={stats_path}"])
  with open(stats_path) as f:
    statistics = json.load(f)
  frames, files = statistics["all"]["num_frames"], statistics["summary"]["num_files"]
  workdir = os.path.join(FLAGS.work_dir, f"run_{FLAGS.name}_{copies}x")
  if os.path.exists(workdir):
    subprocess.run(["rm", "-rf", workdir], check=True)
  train_s, train_kib, _ = _run(["musicgen_jax.train", f"--workdir={workdir}", *source,
                                *TRAIN_FLAGS, f"--num_steps={FLAGS.num_steps}",
                                f"--eval_every={FLAGS.num_steps}"])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if '"frames_per_s"' in line]
  steady = [r["frames_per_s"] for r in records if "train_loss" in r][1:]
  return {"copies": copies, "files": files, "frames": frames, "prepare_s": round(prepare_s, 1),
          "prepare_peak_rss_mib": round(prepare_kib / 1024, 1),
          "train_s": round(train_s, 1), "train_peak_rss_mib": round(train_kib / 1024, 1),
          "frames_per_s": round(sum(steady) / max(len(steady), 1), 0)}


def code_label() -> str:
  """The commit of --code_dir where it is a git checkout, else its path."""
  done = subprocess.run(["git", "-C", FLAGS.code_dir, "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True, check=False)
  return f"commit {done.stdout.strip()}" if done.returncode == 0 else FLAGS.code_dir


def main(argv):
  del argv
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  rows = []
  for copies in map(int, FLAGS.copies):
    row = measure(copies)
    print(json.dumps(row), flush=True)
    rows.append(row)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  with open(os.path.join(FLAGS.out_dir, f"memory_{FLAGS.name}.json"), "w") as f:
    json.dump({"name": FLAGS.name, "code_dir": code_label(), "rows": rows,
               "train_flags": TRAIN_FLAGS, "num_steps": FLAGS.num_steps,
               "shard_files": FLAGS.shard_files,
               "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}, f, indent=2)
  lines = [f"# Training memory as the corpus grows: {FLAGS.name}", "",
           f"`python -m experiments.bench_memory --copies={','.join(FLAGS.copies)} "
           f"--name={FLAGS.name} --shard_files={FLAGS.shard_files}` (code: {code_label()}); "
           f"{platform.machine()}, {os.cpu_count()} CPU cores; the train command "
           f"`{' '.join(TRAIN_FLAGS)}`, {FLAGS.num_steps} steps.", "",
           "| copies of piano-midi | files | frames | train peak RSS (MiB) | frames/s "
           "| prepare (s) | prepare peak RSS (MiB) | train (s) |",
           "|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['copies']} | {r.get('files', '')} | {r['frames']} | "
            f"{r['train_peak_rss_mib']} | {r['frames_per_s']:.0f} | {r['prepare_s']} | "
            f"{r.get('prepare_peak_rss_mib', '')} | {r['train_s']} |" for r in rows]
  with open(os.path.join(FLAGS.out_dir, f"memory_{FLAGS.name}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  define_flags()
  app.run(main)

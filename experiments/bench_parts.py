"""The benchmark's newer measurements: ops per frame, the train command against its bare
step, memory at a large size, and the largest training batch a device holds.

Each takes the benchmark's `Programs` (compiled programs keyed by shape) and returns
JSON-ready rows; `experiments/benchmark.py` calls them and `benchmark_report` prints them.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments import hlo_ops
from musicgen_jax import generate, sampling
from musicgen_jax.models import init_carry

HEADS = ("independent", "nade")


def ops_per_frame(programs, models, heads=HEADS) -> list[dict]:
  """Ops one generated frame executes (from the optimized HLO), per model and head."""
  rows = []
  for model in models:
    for head in heads:
      cfg = programs.model_config(model, programs.cfg.sample_window, head)
      params = programs.params(cfg)

      def compiled(n, cfg=cfg, params=params):
        sampler = generate.model_sampler(cfg, sampling.SampleSettings(num_frames=n))
        prime = jnp.zeros((1, 10, 107), jnp.float32)
        return sampler.lower(init_carry(cfg, 1), prime, jax.random.key(0), None,
                             params).compile()

      counted = hlo_ops.per_frame(compiled, 256, 512)
      rows.append({"model": model, "head": head, **counted})
      logging.info("ops per frame %s %s: %s", model, head, counted)
  return rows


def _synthetic_dataset(frames: np.ndarray):
  from musicgen_jax.data import STUDY_FRAME, DataConfig, Dataset, Piece  # pylint: disable=g-import-not-at-top
  pieces = [Piece(f"train/{i}", piece) for i, piece in enumerate(frames)]
  return Dataset(splits={"train": pieces, "valid": [], "test": []}, skipped=[], summary={},
                 config=DataConfig(cache_dir=tempfile.gettempdir(), **STUDY_FRAME))


def train_command_vs_step(programs, model: str = "lstm", seq_len: int = 48,
                          steps: int = 400) -> dict:
  """frames/s of `train_and_evaluate` (the train command's loop: batches, logging,
  checkpoints) against the bare compiled step of the same model, batch and length."""
  from musicgen_jax import train  # pylint: disable=g-import-not-at-top
  from musicgen_jax.config import RunConfig, TrainConfig  # pylint: disable=g-import-not-at-top
  cfg = programs.cfg
  entry = programs.train(model, seq_len, cfg.batch_size)
  programs.run_train(entry, 3)
  start = time.perf_counter()
  programs.run_train(entry, steps // 4)
  bare = cfg.batch_size * seq_len * (steps // 4) / (time.perf_counter() - start)
  dataset = _synthetic_dataset(programs.random_frames(64, 2000, seed=3))
  config = RunConfig.create(
      programs.model_config(model, seq_len), dataset.config,
      TrainConfig(batch_size=cfg.batch_size, num_steps=steps, warmup_steps=10,
                  log_every=max(1, steps // 8), eval_every=0, checkpoint_every=steps))
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir, dataset=dataset)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rates = [json.loads(line)["frames_per_s"] for line in f][1:-1]  # compile, checkpoint
  command = statistics.median(rates)
  return {"model": model, "seq_len": seq_len, "batch_size": cfg.batch_size, "steps": steps,
          "bare_step_frames_per_s": bare, "train_command_frames_per_s": command,
          "ratio": command / bare}


def memory(programs, models=("lstm", "transformer"), seq_len: int = 1024,
           batch: int = 256) -> list[dict]:
  """Peak memory of one training step and one sampled batch at a large size."""
  rows = []
  device_peak_bytes, rss_peak_bytes = programs.device_peak_bytes, programs.rss_peak_bytes
  for model in models:
    row = {"what": "train step", "model": model, "seq_len": seq_len, "batch_size": batch,
           "xla": None}
    try:
      entry = programs.train(model, seq_len, batch)  # compiles and runs one step
      row["xla"] = entry["memory"]
      programs.run_train(entry, 1)
    except Exception as e:  # pylint: disable=broad-except  # e.g. RESOURCE_EXHAUSTED on a CPU
      logging.info("memory: %s train step does not fit: %s", model, str(e)[:200])
      row["does_not_fit"] = str(e).splitlines()[0][:200]
    programs.drop(("train", model, seq_len, batch))
    rows.append(dict(row, device_peak_bytes=device_peak_bytes(),
                     rss_peak_bytes=rss_peak_bytes()))
    sampler = programs.sampler(model, batch, seq_len)
    jax.block_until_ready(sampler["run"]())
    rows.append({"what": "sampled batch", "model": model, "num_frames": seq_len,
                 "batch_size": batch, "xla": sampler["memory"],
                 "device_peak_bytes": device_peak_bytes(), "rss_peak_bytes": rss_peak_bytes()})
  return rows


def largest_batch(programs, model: str = "lstm", seq_len: int = 48,
                  start: int = 1024, cap: int = 1 << 17) -> dict:
  """Training frames/s at the largest power-of-two batch that compiles and runs (accelerators)."""
  best = None
  batch = start
  while batch <= cap:
    try:
      entry = programs.train(model, seq_len, batch)
      programs.run_train(entry, 2)
      t = time.perf_counter()
      programs.run_train(entry, 5)
      seconds = (time.perf_counter() - t) / 5
    except Exception as e:  # pylint: disable=broad-except  # out of memory ends the search
      logging.info("batch %d does not fit: %s", batch, str(e)[:200])
      break
    best = {"model": model, "seq_len": seq_len, "batch_size": batch, "step_s": seconds,
            "frames_per_s": batch * seq_len / seconds, "xla": entry["memory"]}
    programs.drop(("train", model, seq_len, batch))
    batch *= 2
  return best or {}

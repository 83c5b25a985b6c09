"""Where a compiled training step or sampled frame spends its time, op by op.

Traces a few calls with `jax.profiler`, sums each XLA op's time per call, and names it
from the optimized HLO (its shape and the JAX code it came from). Ops are grouped into
matrix products (XLA CPU's `ynn_fusion` / `dot`), data movement (copies, transposes,
concatenations, broadcasts, dynamic-update-slices) and the rest (elementwise and
reductions), and into those that run once per call and those inside a time loop.

    python -m experiments.profile_ops --what=train --model=lstm --hidden_size=64
    python -m experiments.profile_ops --what=sample --model=lstm --batch_size=64

Times are per training step (or per sampled frame) summed over the threads that ran the
ops: on 2 cores two ops can overlap, so the sum may exceed the wall time, which is
printed beside it.
"""

from __future__ import annotations

import collections
import functools
import glob
import gzip
import json
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from musicgen_jax import encoding, generate, sampling, train
from musicgen_jax.config import TrainConfig
from musicgen_jax.models import ModelConfig, init_carry, init_params

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line (defined when run, so that other experiments can import this)."""
  flags.DEFINE_enum("what", "train", ["train", "sample"], "A training step or sampling.")
  flags.DEFINE_string("model", "lstm", "Model.")
  flags.DEFINE_integer("hidden_size", 64, "Model width.")
  flags.DEFINE_integer("num_layers", 2, "Layers.")
  flags.DEFINE_string("note_head", "independent", "Note head.")
  flags.DEFINE_integer("nade_hidden", 100, "NADE hidden units.")
  flags.DEFINE_integer("batch_size", 64, "Batch.")
  flags.DEFINE_integer("seq_len", 48, "Training window (sampling: the model's context).")
  flags.DEFINE_bool("note_lengths", False, "Frames with note lengths (a length head).")
  flags.DEFINE_bool("metre", False, "Frames with metre columns.")
  flags.DEFINE_integer("num_frames", 256, "Frames sampled per call.")
  flags.DEFINE_integer("calls", 10, "Traced calls.")
  flags.DEFINE_integer("top", 25, "Ops listed.")


_MOVEMENT = {"copy", "transpose", "concatenate", "broadcast", "dynamic-update-slice", "slice",
             "dynamic-slice", "pad", "gather", "bitcast", "reshape", "wrapped", "fusion"}
_FRAMEWORK = ("ThunkExecutor", "PjitFunction", "SlinkyThreadPool", "CommonPjRt")


def category(name: str) -> str:
  """An XLA CPU op's kind from its name: a fusion is named after the ops it holds, and it
  moves data only when each of them does (copy_bitcast_fusion; not broadcast_add_fusion)."""
  base = name.split(".")[0]
  if base.startswith(("ynn_fusion", "dot", "custom-call")):
    return "matmul"
  if base in ("while", "cond", "call", "conditional"):
    return "loop"
  if set(base.split("_")) <= _MOVEMENT:
    return "data movement"
  return "elementwise and reductions"


def _frames(rng, batch: int, time_steps: int) -> np.ndarray:
  """Synthetic frames of the flags' layout: ~4 notes each, durations and lengths on the grid."""
  layout = encoding.FrameLayout(velocity=False, lengths=FLAGS.note_lengths, metre=FLAGS.metre)
  frames = np.zeros((batch, time_steps, layout.width), np.float32)
  notes = rng.random((batch, time_steps, 106)) < 4 / 106
  frames[..., :106] = notes
  frames[..., 106] = rng.integers(1, 25, (batch, time_steps)) / 12
  if layout.lengths:
    frames[..., layout.length_columns] = notes * rng.integers(1, 25, notes.shape) / 12
  if layout.metre:
    frames[..., layout.metre_columns.start + 1] = 4.0
  return frames


def _program():
  """(call() -> output, units per call, unit name, compiled HLO text)."""
  cfg = ModelConfig(model=FLAGS.model, hidden_size=FLAGS.hidden_size,
                    num_layers=FLAGS.num_layers, seq_len=FLAGS.seq_len,
                    note_head=FLAGS.note_head, nade_hidden=FLAGS.nade_hidden,
                    note_lengths=FLAGS.note_lengths, metre=FLAGS.metre)
  params = init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = FLAGS.batch_size
  if FLAGS.what == "sample":
    sampler = generate.model_sampler(cfg, sampling.SampleSettings(num_frames=FLAGS.num_frames))
    prime = _frames(rng, batch, 10)
    args = (init_carry(cfg, batch), jnp.asarray(prime), jax.random.key(0), None, params)
    return (lambda: sampler(*args)), FLAGS.num_frames, "frame", sampler.lower(*args).compile()
  tcfg = TrainConfig(batch_size=batch, num_steps=10**6)
  state = train.TrainState.create(apply_fn=None, params=params,
                                  tx=train.make_optimizer(tcfg, 10**6))
  frames = _frames(rng, batch, FLAGS.seq_len + 1)
  data = {"frames": jnp.asarray(frames), "mask": jnp.ones((batch, FLAGS.seq_len)),
          "reset": jnp.ones((batch,), bool)}
  step = jax.jit(functools.partial(train.train_step, model_cfg=cfg, seed=0))
  holder = {"state": state.replace(step=jnp.zeros((), jnp.int32))}

  def call():
    holder["state"], metrics = step(holder["state"], data)
    return metrics

  return call, 1, "step", step.lower(holder["state"], data).compile()


def profile() -> dict:
  call, units, unit, compiled = _program()
  for _ in range(3):
    jax.block_until_ready(call())
  start = time.perf_counter()
  for _ in range(FLAGS.calls):
    jax.block_until_ready(call())
  wall = (time.perf_counter() - start) / (FLAGS.calls * units)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(FLAGS.calls):
        jax.block_until_ready(call())
    path = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
    events = json.load(gzip.open(path))["traceEvents"]
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith("$") and not e["name"].startswith(
        _FRAMEWORK):
      total[e["name"]] += e["dur"]
      count[e["name"]] += 1
  hlo, per = compiled.as_text(), FLAGS.calls * units
  ops = []
  for name, us in total.most_common():
    found = re.search(r"%" + re.escape(name) + r" = (\S+) .*?op_name=\"([^\"]*)\"", hlo)
    ops.append({"op": name, "us": us / per, "runs": count[name] / per,
                "category": category(name), "shape": found.group(1) if found else "",
                "source": found.group(2).split("/", 1)[-1] if found else ""})
  by_category = collections.Counter()
  for op in ops:
    if op["category"] != "loop":  # a loop's time is the sum of the ops inside it
      by_category[op["category"]] += op["us"]
  return {"unit": unit, "wall_us": wall * 1e6, "ops": ops, "by_category": dict(by_category)}


def main(argv):
  del argv
  result = profile()
  unit = result["unit"]
  print(f"{FLAGS.what} {FLAGS.model} hidden {FLAGS.hidden_size} x {FLAGS.num_layers} "
        f"{FLAGS.note_head} batch {FLAGS.batch_size}: wall {result['wall_us']:.1f} us "
        f"per {unit}")
  for name, us in sorted(result["by_category"].items(), key=lambda kv: -kv[1]):
    print(f"  {name:28s} {us:10.1f} us per {unit}")
  print(f"  {'op':36s} {'us':>9s} {'runs':>6s}  shape, source")
  for op in result["ops"][:FLAGS.top]:
    print(f"  {op['op'][:36]:36s} {op['us']:9.1f} {op['runs']:6.1f}  {op['shape'][:26]} "
          f"{op['source'][-70:]}")


if __name__ == "__main__":
  define_flags()
  app.run(main)

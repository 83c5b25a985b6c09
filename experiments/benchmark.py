"""Benchmark: training and sampling speed against a PyTorch reference, and how cost grows.

Run from the repository root:

    python -m experiments.benchmark --quick --torch_sample_frames=48   # ~15 min, see below
    python -m experiments.benchmark [--dtype=float32|bfloat16] [--out_dir=...] [--name=...]

Expected time on 2 CPU cores at load average 6-9 (other jobs running): `--quick` about
15 minutes; the full default run well over 35 minutes, because torch with
set_num_threads(2) on an oversubscribed machine needs up to ~1 s per generated frame
(bilstm/transformer at batch 64); lower --torch_sample_frames / --sample_repeats, or
pass --notorch, to bound it. On an idle machine or a GPU the JAX part alone takes a
few minutes.

It times the library's own programs (no benchmark-only model code):
  1. training: `train.make_train_step` over `train.init_state` (jit, NamedSharding,
     donated state, AdamW + clipping) for rnn/lstm/bilstm/transformer at hidden 64,
     2 layers, batch 64, seq_len 48 and 200; compile time reported separately;
  2. sampling: `sampling.make_sampler` over `models.decode_step` (one compiled
     lax.scan), batch 1 and 64, 1024 frames after a 10-frame prime;
  3. scaling: seconds per training step vs seq_len and vs batch size, seconds per
     generated frame vs output length (must stay flat), and memory: XLA's buffer
     assignment of each compiled program, `device.memory_stats()` peak where the
     backend has it (GPU/TPU), and the process RSS high-water mark otherwise;
  4. cost: FLOPs and bytes per frame from `Compiled.cost_analysis()`, and the number
     of ops (kernels) one train step / one generated frame executes, from a profiler
     trace; from those, what an H100 should reach and what limits it.

PyTorch (experiments/torch_reference.py, the usual eager loop and per-frame sampling
loop) runs in the same process, interleaved with JAX round by round; ratios are the
median of per-round ratios. torch uses `torch.set_num_threads(--torch_threads)`
(default: the number of cores) and, with `--torch_one_thread` (default on), is also
timed with 1 thread, because an oversubscribed machine can slow torch's OpenMP
threads down many times; the headline ratio is against the faster torch setting.
Without torch installed the JAX part still runs. Outputs: NAME.json, NAME.md and
NAME_*.png in --out_dir. Runs unchanged on GPU/TPU (`--dtype=bfloat16` there).
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import gzip
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from absl import app, flags, logging

import jax
import jax.numpy as jnp
import numpy as np

from experiments import bench_parts
from experiments import benchmark_report as report
from musicgen_jax import parallel, sampling, train
from musicgen_jax.config import TrainConfig
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, NUM_NOTES
from musicgen_jax.models import ModelConfig, decode_step, init_carry, init_params

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("rnn", "lstm", "bilstm", "transformer")
PRIME_FRAMES = 10  # the study primes generation with 10 frames
NOTES_PER_FRAME = 4.0  # synthetic data: mean sounding notes per frame
MAX_DURATION_STEPS_DRAWN = 24  # synthetic durations: 1..24 grid steps (up to 2 quarters)

# H100 SXM peak figures used for the accelerator estimate (NVIDIA data sheet, dense).
H100 = {
    "fp32_flops": 67e12,  # CUDA cores, no tensor cores
    "tf32_flops": 495e12,
    "bf16_flops": 989e12,
    "hbm_bytes_per_s": 3.35e12,
    "kernel_launch_s": 4e-6,  # per dependent kernel: launch + tail, small kernels
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """What to measure; `quick()` gives the short run."""

  models: tuple[str, ...] = MODELS
  hidden_size: int = 64  # the study's size
  num_layers: int = 2
  num_heads: int = 4
  dtype: str = "float32"
  batch_size: int = 64
  train_seq_lens: tuple[int, ...] = (48, 200)
  sample_batches: tuple[int, ...] = (1, 64)
  sample_frames: int = 1024
  sample_window: int = 48  # seq_len of the sampled models (transformer/bilstm context)
  repeats: int = 5  # interleaved rounds (JAX, torch, torch 1 thread) per configuration
  round_seconds: float = 0.6  # aimed length of one timed round per framework
  sample_repeats: int = 3
  torch: bool = True
  torch_threads: int = 0  # 0 = the number of cores
  torch_one_thread: bool = True
  torch_sample_frames: int = 256  # the per-frame torch loop is timed over this many frames
  torch_device: str = "auto"  # 'cuda' when torch sees a GPU, else 'cpu'; or name one
  scaling: bool = True
  scaling_models: tuple[str, ...] = ("lstm", "transformer")
  scaling_seq_lens: tuple[int, ...] = (24, 48, 96, 200, 400, 1024)
  scaling_batches: tuple[int, ...] = (1, 8, 32, 64, 128, 256)
  scaling_seq_len: int = 48  # seq_len of the batch-size sweep
  scaling_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
  scaling_sample_batch: int = 64
  scaling_repeats: int = 3
  count_ops: bool = True  # profile one step / one frame to count executed ops
  heads: tuple[str, ...] = ("independent", "nade")  # note heads of the sampling rows
  sample_models: tuple[str, ...] | None = None  # models of the sampling rows (None: models)
  ops_models: tuple[str, ...] | None = None  # models of the ops-per-frame rows (None: models)
  ops: bool = True  # ops per generated frame from the optimized HLO, every model and head
  train_command: bool = True  # the train command's frames/s against its bare step
  train_command_steps: int = 400
  memory: bool = True  # peak memory of a step and a sampled batch at seq_len 1024, batch 256
  memory_batch: int = 256
  memory_seq_len: int = 1024
  largest_batch: bool = False  # accelerators: training at the largest batch that fits
  only: tuple[str, ...] = ()  # run only these parts (e.g. to finish a run cut short)
  plots: bool = True

  @classmethod
  def gpu(cls, **overrides) -> "BenchConfig":
    """One accelerator in a few minutes: sampling at batch 1 and 1024, the largest batch."""
    base = dict(repeats=3, round_seconds=0.3, sample_repeats=2, sample_batches=(1, 1024),
                torch_sample_frames=64, torch_one_thread=False,
                sample_models=("rnn", "lstm", "transformer"), ops_models=("lstm", "transformer"),
                scaling_seq_lens=(48,), scaling_batches=(64,), scaling_lengths=(256, 1024, 4096),
                count_ops=False, largest_batch=True)
    base.update(overrides)
    return cls(**base)

  @classmethod
  def gpu_bf16(cls, **overrides) -> "BenchConfig":
    """bfloat16 on an accelerator: training and sampling only."""
    return cls.gpu(dtype="bfloat16", scaling=False, ops=False, train_command=False,
                   memory=False, largest_batch=False, heads=("independent",), **overrides)

  @classmethod
  def quick(cls, **overrides) -> "BenchConfig":
    base = dict(train_seq_lens=(48, 200), repeats=3, round_seconds=0.3, sample_repeats=2,
                sample_frames=256, torch_sample_frames=64,
                scaling_seq_lens=(24, 96, 400), scaling_batches=(8, 64, 256),
                scaling_lengths=(256, 1024, 4096), scaling_repeats=2)
    base.update(overrides)
    return cls(**base)


# Data and small helpers --------------------------------------------------------------------


def random_frames(batch: int, time_steps: int, seed: int = 0) -> np.ndarray:
  """float32[batch, time, 107] synthetic frames: sparse notes, durations on the 1/12 grid."""
  rng = np.random.default_rng(seed)
  frames = np.zeros((batch, time_steps, FRAME_DIM), np.float32)
  frames[..., :NUM_NOTES] = rng.random((batch, time_steps, NUM_NOTES)) < NOTES_PER_FRAME / NUM_NOTES
  frames[..., DURATION_INDEX] = rng.integers(1, MAX_DURATION_STEPS_DRAWN + 1,
                                             (batch, time_steps)) / 12.0
  return frames


def load_average() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def rss_peak_bytes() -> int:
  """The process's resident-set high-water mark (never decreases)."""
  scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def device_peak_bytes() -> int | None:
  """Peak bytes in use on the first device where the backend reports it (GPU/TPU)."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats:
    return None
  return stats.get("peak_bytes_in_use")


def xla_memory(compiled) -> dict[str, int] | None:
  """Bytes of XLA's buffer assignment for a compiled program (arguments, outputs, temps)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    return None
  if m is None:
    return None
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
           m.alias_size_in_bytes)
  return {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
          "temps": int(m.temp_size_in_bytes), "total": int(total)}


def cost(compiled) -> dict[str, float]:
  """FLOPs and bytes accessed that XLA counts for one call of a compiled program."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return {"flops": float(analysis.get("flops", 0.0)),
          "bytes": float(analysis.get("bytes accessed", 0.0))}


_NOT_OPS = ("ThunkExecutor", "$", "PjitFunction", "Common", "PjRt", "Execute", "Thunk",
            "ThreadpoolListener", "end: ")


def count_executed_ops(call: Callable[[], Any]) -> int | None:
  """How many XLA ops (CPU thunks; kernels on GPU) one call executes, from a trace."""
  with tempfile.TemporaryDirectory() as log_dir:
    try:
      with jax.profiler.trace(log_dir, create_perfetto_trace=True):
        jax.block_until_ready(call())
    except Exception as e:  # pylint: disable=broad-except  # profiler unavailable
      logging.warning("op count skipped: %s", e)
      return None
    paths = glob.glob(os.path.join(log_dir, "**", "*perfetto_trace.json.gz"), recursive=True)
    if not paths:
      return None
    with gzip.open(paths[0]) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return sum(1 for e in events if e.get("ph") == "X" and
             not str(e.get("name", "")).startswith(_NOT_OPS))


def timed_rounds(fns: dict[str, Callable[[int], None]], per_call: dict[str, float],
                 repeats: int, round_seconds: float) -> dict[str, list[float]]:
  """Interleaves the measurements: each round times every fn once, in turn.

  Args:
    fns: name -> fn(n) running n units of work and waiting for the result.
    per_call: name -> a first estimate of seconds per unit (to size n).
    repeats: rounds.
    round_seconds: aimed wall time of one timed call.

  Returns:
    name -> seconds per unit, one entry per round.
  """
  counts = {k: max(1, int(round(round_seconds / max(per_call[k], 1e-9)))) for k in fns}
  out = {k: [] for k in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn(counts[name])
      out[name].append((time.perf_counter() - start) / counts[name])
  return out


def median(xs):
  return float(statistics.median(xs)) if xs else float("nan")


def paired_ratio(slow: list[float], fast: list[float]) -> float:
  """Median over rounds of slow / fast seconds (how many times faster `fast` is)."""
  return median([s / f for s, f in zip(slow, fast)])


# PyTorch ---------------------------------------------------------------------------------


def _torch_module():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from experiments import torch_reference  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    logging.warning("PyTorch part skipped: %s", e)
    return None, None
  return torch, torch_reference


def torch_device(cfg: BenchConfig, torch) -> str:
  if cfg.torch_device != "auto":
    return cfg.torch_device
  return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync(torch) -> None:
  """Waits for the GPU (torch runs asynchronously there)."""
  if torch.cuda.is_available():
    torch.cuda.synchronize()


# JAX programs ----------------------------------------------------------------------------


class Programs:
  """Compiled programs keyed by their shapes, so sweeps reuse them."""

  def __init__(self, cfg: BenchConfig):
    self.cfg = cfg
    self.mesh = parallel.make_mesh()
    self._cache: dict = {}

  def model_config(self, model: str, seq_len: int, head: str = "independent") -> ModelConfig:
    c = self.cfg
    return ModelConfig(model=model, hidden_size=c.hidden_size, num_layers=c.num_layers,
                       num_heads=c.num_heads, dtype=c.dtype, seq_len=seq_len, note_head=head)

  # Helpers the parts in bench_parts read through the programs (this module is often
  # __main__, which must not be imported a second time).
  random_frames = staticmethod(lambda *a, **k: random_frames(*a, **k))
  device_peak_bytes = staticmethod(lambda: device_peak_bytes())
  rss_peak_bytes = staticmethod(lambda: rss_peak_bytes())

  def drop(self, key) -> None:
    """Forgets a compiled program (and its buffers): sweeps of growing sizes free memory."""
    self._cache.pop(key, None)

  def train(self, model: str, seq_len: int, batch: int) -> dict:
    """{'step': compiled, 'state', 'batch', 'compile_s', 'memory', 'cost'} (state donated)."""
    key = ("train", model, seq_len, batch)
    if key not in self._cache:
      model_cfg = self.model_config(model, seq_len)
      train_cfg = TrainConfig(batch_size=batch, num_steps=1_000_000)
      state = train.TrainState.create(
          apply_fn=None, params=init_params(model_cfg, jax.random.key(0)),
          tx=train.make_optimizer(train_cfg, train_cfg.num_steps))
      state = parallel.replicate(state.replace(step=jnp.zeros((), jnp.int32)), self.mesh)
      frames = random_frames(batch, seq_len + 1)
      sharding = parallel.data_sharding(self.mesh)
      batch_array = {"frames": parallel.global_batch(frames, sharding),
                     "mask": parallel.global_batch(np.ones((batch, seq_len), np.float32),
                                                   sharding),
                     "reset": parallel.global_batch(np.ones((batch,), bool), sharding)}
      step = train.compiled_step(model_cfg, train_cfg, self.mesh)
      start = time.perf_counter()
      compiled = step.lower(state, batch_array).compile()
      compile_s = time.perf_counter() - start
      state, metrics = compiled(state, batch_array)  # first run
      jax.block_until_ready(metrics)
      if not np.isfinite(float(metrics["nll"]) / float(metrics["count"])):
        raise FloatingPointError(f"{model}: non-finite training loss")
      self._cache[key] = {"step": compiled, "state": state, "batch": batch_array,
                          "frames": frames, "compile_s": compile_s,
                          "memory": xla_memory(compiled), "cost": cost(compiled)}
    return self._cache[key]

  def run_train(self, entry: dict, n: int) -> None:
    state, batch, step = entry["state"], entry["batch"], entry["step"]
    for _ in range(n):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    entry["state"] = state

  def sampler(self, model: str, batch: int, num_frames: int, head: str = "independent") -> dict:
    key = ("sample", model, batch, num_frames, head)
    if key not in self._cache:
      model_cfg = self.model_config(model, self.cfg.sample_window, head)
      params = self.params(model_cfg)
      settings = sampling.SampleSettings(num_frames=num_frames)

      def step_fn(frame, carry, params):
        return decode_step(model_cfg, params, frame, carry)

      sampler = sampling.make_sampler(step_fn, settings)
      carry = init_carry(model_cfg, batch)
      prime = jnp.asarray(random_frames(batch, PRIME_FRAMES, seed=1))
      rng = jax.random.key(0)
      start = time.perf_counter()
      compiled = sampler.lower(carry, prime, rng, None, params).compile()
      compile_s = time.perf_counter() - start
      out = compiled(carry, prime, rng, None, params)
      out = np.asarray(jax.block_until_ready(out))
      if out.shape != (batch, PRIME_FRAMES + num_frames, FRAME_DIM) or not np.isfinite(out).all():
        raise FloatingPointError(f"{model}: bad sample of shape {out.shape}")
      self._cache[key] = {"run": lambda: compiled(carry, prime, rng, None, params),
                          "compile_s": compile_s, "memory": xla_memory(compiled),
                          "params": params}
    return self._cache[key]

  def params(self, model_cfg: ModelConfig):
    key = ("params", model_cfg)
    if key not in self._cache:
      self._cache[key] = init_params(model_cfg, jax.random.key(0))
    return self._cache[key]

  def frame_step(self, model: str, batch: int) -> dict:
    """One generated frame (decode_step + sample_frame, the scan's body) compiled alone."""
    key = ("frame", model, batch)
    if key not in self._cache:
      model_cfg = self.model_config(model, self.cfg.sample_window)
      settings = sampling.SampleSettings(num_frames=1)
      params = self.params(model_cfg)

      def one_frame(params, frame, carry, rng):
        pred, carry = decode_step(model_cfg, params, frame, carry)
        return sampling.sample_frame(pred, rng, settings), carry

      args = (params, jnp.asarray(random_frames(batch, 1)[:, 0]), init_carry(model_cfg, batch),
              jax.random.key(0))
      compiled = jax.jit(one_frame).lower(*args).compile()
      self._cache[key] = {"compiled": compiled, "args": args, "cost": cost(compiled)}
    return self._cache[key]


# The measurements -------------------------------------------------------------------------


def measure_training(cfg: BenchConfig, programs: Programs, torch, ref) -> list[dict]:
  rows = []
  for seq_len in cfg.train_seq_lens:
    for model in cfg.models:
      entry = programs.train(model, seq_len, cfg.batch_size)
      fns = {"jax": lambda n, e=entry: programs.run_train(e, n)}
      per_call = {}
      start = time.perf_counter()
      programs.run_train(entry, 1)
      per_call["jax"] = time.perf_counter() - start
      if torch is not None:
        device = torch_device(cfg, torch)
        trainer = ref.Trainer(model, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                              device=device)
        torch_batch = torch.from_numpy(entry["frames"]).to(device)

        def run_torch(n, threads, trainer=trainer, batch=torch_batch):
          torch.set_num_threads(threads)
          for _ in range(n):
            loss = trainer.step(batch)
          float(loss)

        settings = {"torch": cfg.torch_threads}
        if cfg.torch_one_thread and cfg.torch_threads != 1:
          settings["torch_1thread"] = 1
        for name, threads in settings.items():
          fns[name] = lambda n, t=threads, f=run_torch: f(n, t)
          start = time.perf_counter()
          fns[name](1)  # warm-up; also sizes the rounds
          per_call[name] = time.perf_counter() - start
      times = timed_rounds(fns, per_call, cfg.repeats, cfg.round_seconds)
      frames_per_step = cfg.batch_size * (seq_len if model != "bilstm" else 1)
      row = {"model": model, "seq_len": seq_len, "batch_size": cfg.batch_size,
             "predicted_frames_per_step": frames_per_step,
             "input_frames_per_step": cfg.batch_size * seq_len,
             "compile_s": round(entry["compile_s"], 3), "xla_memory_bytes": entry["memory"],
             "cost_per_step": entry["cost"]}
      for name, ts in times.items():
        row[name] = {"step_s": median(ts), "steps_per_s": 1.0 / median(ts),
                     "frames_per_s": cfg.batch_size * seq_len / median(ts),
                     "rounds_s": [round(t, 6) for t in ts]}
      _add_ratios(row, times)
      rows.append(row)
      logging.info("train %-11s T=%-4d %s", model, seq_len, _ratio_text(row))
  return rows


def _add_ratios(row: dict, times: dict[str, list[float]]) -> None:
  """jax/torch speed ratios (> 1: JAX faster), medians of per-round ratios."""
  for name in ("torch", "torch_1thread"):
    if name in times:
      row[f"ratio_vs_{name}"] = paired_ratio(times[name], times["jax"])
  best = [k for k in ("torch", "torch_1thread") if k in times]
  if best:
    fastest = min(best, key=lambda k: median(times[k]))
    row["ratio_vs_best_torch"] = row[f"ratio_vs_{fastest}"]
    row["best_torch"] = fastest


def _ratio_text(row: dict) -> str:
  parts = [f"jax {row['jax']['frames_per_s']:.0f} frames/s"]
  for name in ("torch", "torch_1thread"):
    if name in row:
      parts.append(f"{name} {row[name]['frames_per_s']:.0f} (x{row[f'ratio_vs_{name}']:.2f})")
  return "  ".join(parts)


def measure_sampling(cfg: BenchConfig, programs: Programs, torch, ref) -> list[dict]:
  rows = []
  models = cfg.sample_models or cfg.models
  for batch, model, head in [(b, m, h) for b in cfg.sample_batches for m in models
                             for h in cfg.heads]:
    entry = programs.sampler(model, batch, cfg.sample_frames, head)

    def run_jax(n, e=entry):
      for _ in range(n):
        out = e["run"]()
      jax.block_until_ready(out)

    fns, per_call, units = {"jax": run_jax}, {}, {"jax": cfg.sample_frames}
    start = time.perf_counter()
    run_jax(1)
    per_call["jax"] = time.perf_counter() - start
    if torch is not None and head == "independent":  # the reference has no NADE head
      device = torch_device(cfg, torch)
      tmodel = ref.build(model, cfg.hidden_size, cfg.num_layers, cfg.num_heads).to(device)
      prime = torch.from_numpy(random_frames(batch, PRIME_FRAMES, seed=1)).to(device)

      def run_torch(n, threads, tmodel=tmodel, prime=prime, model=model):
        torch.set_num_threads(threads)
        for _ in range(n):
          ref.generate(model, tmodel, prime, cfg.torch_sample_frames, cfg.sample_window)
        torch_sync(torch)

      settings = {"torch": cfg.torch_threads}
      if cfg.torch_one_thread and cfg.torch_threads != 1:
        settings["torch_1thread"] = 1
      for name, threads in settings.items():
        fns[name] = lambda n, t=threads, f=run_torch: f(n, t)
        units[name] = cfg.torch_sample_frames
        start = time.perf_counter()
        fns[name](1)
        per_call[name] = time.perf_counter() - start
    raw = timed_rounds(fns, per_call, cfg.sample_repeats, cfg.round_seconds)
    times = {k: [t / units[k] for t in ts] for k, ts in raw.items()}  # seconds per frame
    row = {"model": model, "head": head, "batch_size": batch,
           "num_frames": cfg.sample_frames, "window": cfg.sample_window,
           "compile_s": round(entry["compile_s"], 3), "xla_memory_bytes": entry["memory"]}
    for name, ts in times.items():
      row[name] = {"frame_s": median(ts), "frames_per_s": batch / median(ts),
                   "frames_timed": units[name],
                   "rounds_s_per_frame": [round(t, 9) for t in ts]}
    _add_ratios(row, times)
    rows.append(row)
    logging.info("sample %-11s %-11s B=%-3d %s", model, head, batch, _ratio_text(row))
  for row in rows:  # the NADE head's cost per frame against the independent head's
    base = [r for r in rows if r["head"] == "independent" and r["model"] == row["model"]
            and r["batch_size"] == row["batch_size"]]
    if row["head"] == "nade" and base:
      row["cost_vs_independent"] = row["jax"]["frame_s"] / base[0]["jax"]["frame_s"]
  return rows


def measure_scaling(cfg: BenchConfig, programs: Programs) -> dict:
  """JAX only: step time vs seq_len and batch; time per frame vs output length."""
  out = {"train_vs_seq_len": [], "train_vs_batch": [], "sample_vs_length": []}

  def time_train(model, seq_len, batch):
    entry = programs.train(model, seq_len, batch)
    start = time.perf_counter()
    programs.run_train(entry, 1)
    first = time.perf_counter() - start
    ts = timed_rounds({"jax": lambda n: programs.run_train(entry, n)}, {"jax": first},
                      cfg.scaling_repeats, cfg.round_seconds)["jax"]
    return {"model": model, "seq_len": seq_len, "batch_size": batch, "step_s": median(ts),
            "frames_per_s": batch * seq_len / median(ts), "compile_s": entry["compile_s"],
            "xla_memory_bytes": entry["memory"], "device_peak_bytes": device_peak_bytes(),
            "rss_peak_bytes": rss_peak_bytes()}

  # Increasing sizes, so that the RSS high-water mark after each point is its peak.
  for model in cfg.scaling_models:
    for seq_len in sorted(cfg.scaling_seq_lens):
      row = time_train(model, seq_len, cfg.batch_size)
      out["train_vs_seq_len"].append(row)
      logging.info("scaling train %s T=%d: %.4f s/step", model, seq_len, row["step_s"])
    for batch in sorted(cfg.scaling_batches):
      row = time_train(model, cfg.scaling_seq_len, batch)
      out["train_vs_batch"].append(row)
      logging.info("scaling train %s B=%d: %.4f s/step", model, batch, row["step_s"])
    for length in sorted(cfg.scaling_lengths):
      entry = programs.sampler(model, cfg.scaling_sample_batch, length)

      def run(n, e=entry):
        for _ in range(n):
          o = e["run"]()
        jax.block_until_ready(o)

      start = time.perf_counter()
      run(1)
      first = time.perf_counter() - start
      ts = timed_rounds({"jax": run}, {"jax": first}, cfg.scaling_repeats,
                        cfg.round_seconds)["jax"]
      frame_s = median(ts) / length
      out["sample_vs_length"].append(
          {"model": model, "num_frames": length, "batch_size": cfg.scaling_sample_batch,
           "frame_s": frame_s, "frames_per_s": cfg.scaling_sample_batch / frame_s,
           "compile_s": entry["compile_s"], "xla_memory_bytes": entry["memory"],
           "device_peak_bytes": device_peak_bytes(), "rss_peak_bytes": rss_peak_bytes()})
      logging.info("scaling sample %s N=%d: %.2e s/frame", model, length, frame_s)
  flatness = {}
  for model in cfg.scaling_models:
    pts = [r for r in out["sample_vs_length"] if r["model"] == model]
    if len(pts) > 1:
      per = [r["frame_s"] for r in pts]
      flatness[model] = {"first_to_last": per[-1] / per[0], "max_over_min": max(per) / min(per),
                         "lengths": [pts[0]["num_frames"], pts[-1]["num_frames"]]}
  out["frame_time_flatness"] = flatness
  return out


def accelerator_estimate(cfg: BenchConfig, programs: Programs, count_ops: bool) -> list[dict]:
  """Per-frame FLOPs/bytes (XLA cost analysis) and executed ops -> H100 bounds."""
  rows = []
  peak = H100["bf16_flops"] if cfg.dtype == "bfloat16" else H100["tf32_flops"]
  for model in cfg.models:
    for kind, seq_len in [("train", cfg.train_seq_lens[0])] + [
        ("sample", b) for b in cfg.sample_batches]:
      if kind == "train":
        entry = programs.train(model, seq_len, cfg.batch_size)
        c, frames = entry["cost"], cfg.batch_size * seq_len
        ops = count_executed_ops(lambda e=entry: (programs.run_train(e, 1), e["state"])[1]) \
            if count_ops else None
        label = {"kind": "train_step", "model": model, "seq_len": seq_len,
                 "batch_size": cfg.batch_size}
      else:
        batch = seq_len
        entry = programs.frame_step(model, batch)
        c, frames = entry["cost"], batch
        ops = count_executed_ops(lambda e=entry: e["compiled"](*e["args"])) if count_ops else None
        label = {"kind": "generated_frame", "model": model, "batch_size": batch,
                 "window": cfg.sample_window}
      if not c:
        continue
      compute_s = c["flops"] / peak
      memory_s = c["bytes"] / H100["hbm_bytes_per_s"]
      launch_s = (ops or 0) * H100["kernel_launch_s"]
      bound = max((compute_s, "compute"), (memory_s, "HBM bandwidth"),
                  (launch_s, "kernel launches / latency"))
      rows.append({**label, "flops": c["flops"], "bytes": c["bytes"],
                   "flops_per_frame": c["flops"] / frames, "bytes_per_frame": c["bytes"] / frames,
                   "intensity_flops_per_byte": c["flops"] / max(c["bytes"], 1.0),
                   "executed_ops": ops, "h100_compute_s": compute_s, "h100_memory_s": memory_s,
                   "h100_launch_s": launch_s, "h100_limit": bound[1],
                   "h100_frames_per_s_estimate": frames / max(bound[0], 1e-12)})
  return rows


# Reports ---------------------------------------------------------------------------------


def _header(cfg: BenchConfig, torch) -> dict:
  return {
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "command": " ".join(shlex.quote(a) for a in sys.argv),
      "machine": {
          "platform": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
          "device_count": jax.device_count(), "cpu_cores": os.cpu_count() or 1,
          "processor": platform.processor() or platform.machine(),
          "python": platform.python_version(), "jax": jax.__version__,
          "torch": getattr(torch, "__version__", None),
          "torch_device": torch_device(cfg, torch) if torch is not None else None,
          "torch_threads": cfg.torch_threads if torch is not None else None,
          "load_average_start": load_average()},
      "config": dataclasses.asdict(cfg),
      "memory_source": ("device memory_stats peak_bytes_in_use" if device_peak_bytes() is not None
                        else "process RSS high-water mark (resource.getrusage ru_maxrss); "
                        "per-program: XLA buffer assignment (Compiled.memory_analysis)"),
  }


def run_benchmark(cfg: BenchConfig, save: Callable[[dict], None] | None = None) -> dict:
  """Runs every part selected in cfg; returns the JSON-ready results.

  `save(results)` is called after each part, so a run stopped by a time limit keeps what
  it measured.
  """
  torch, ref = _torch_module() if cfg.torch else (None, None)
  if cfg.torch_threads <= 0:
    cfg = dataclasses.replace(cfg, torch_threads=os.cpu_count() or 1)
  if torch is not None:
    torch.set_num_threads(cfg.torch_threads)
  programs, started = Programs(cfg), time.perf_counter()
  results: dict[str, Any] = _header(cfg, torch)
  parts = [
      ("training", True, lambda: measure_training(cfg, programs, torch, ref)),
      ("sampling", True, lambda: measure_sampling(cfg, programs, torch, ref)),
      ("ops_per_frame", cfg.ops, lambda: bench_parts.ops_per_frame(
          programs, cfg.ops_models or cfg.models, cfg.heads)),
      ("train_command", cfg.train_command, lambda: bench_parts.train_command_vs_step(
          programs, model=cfg.models[0], steps=cfg.train_command_steps)),
      ("scaling", cfg.scaling, lambda: measure_scaling(cfg, programs)),
      ("memory", cfg.memory, lambda: bench_parts.memory(
          programs, seq_len=cfg.memory_seq_len, batch=cfg.memory_batch)),
      ("largest_batch", cfg.largest_batch, lambda: bench_parts.largest_batch(programs)),
      ("accelerator_estimate", True, lambda: accelerator_estimate(cfg, programs, cfg.count_ops)),
  ]
  for name, wanted, measure in parts:
    if not wanted or (cfg.only and name not in cfg.only):
      continue
    results[name] = measure()
    results["machine"][f"load_average_after_{name}"] = load_average()
    results["machine"]["load_average_end"] = results["machine"][f"load_average_after_{name}"]
    results["h100_assumptions"] = H100
    results["rss_peak_bytes"] = rss_peak_bytes()
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = report.check_targets(results)
    if save is not None:
      save(results)
  return results


# The command line ------------------------------------------------------------------------

_QUICK = flags.DEFINE_bool("quick", False, "Shorter run: fewer repeats, lengths and sizes.")
_ONLY = flags.DEFINE_list("only", [], "Run only these parts: training, sampling, ops_per_frame, "
                          "train_command, scaling, memory, largest_batch, accelerator_estimate.")
_PRESET = flags.DEFINE_enum("preset", "full", ["full", "quick", "gpu", "gpu_bf16"],
                            "What to measure: the full CPU run, a quick one, or one accelerator "
                            "in a few minutes (float32, or bfloat16 training and sampling).")
_MODELS = flags.DEFINE_list("models", list(MODELS), "Models to benchmark.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "JAX compute dtype.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Training batch size.")
_HIDDEN = flags.DEFINE_integer("hidden_size", 64, "Model width (the study's 64; the shipped "
                               "models' sizes are 256-512).")
_LAYERS = flags.DEFINE_integer("num_layers", 2, "Stacked layers (the study's 2).")
_SEQ_LENS = flags.DEFINE_list("train_seq_lens", ["48", "200"], "Training seq_lens.")
_SAMPLE_BATCHES = flags.DEFINE_list("sample_batches", ["1", "64"], "Sampling batch sizes.")
_SAMPLE_FRAMES = flags.DEFINE_integer("sample_frames", None, "Frames generated (default 1024; "
                                      "256 with --quick).")
_REPEATS = flags.DEFINE_integer("repeats", None, "Interleaved training rounds per configuration.")
_SAMPLE_REPEATS = flags.DEFINE_integer("sample_repeats", None,
                                       "Interleaved sampling rounds per configuration.")
_TORCH_SAMPLE_FRAMES = flags.DEFINE_integer(
    "torch_sample_frames", None, "Frames the per-frame torch loop is timed over.")
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch reference too (when installed).")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: cores).")
_TORCH_ONE = flags.DEFINE_bool("torch_one_thread", True, "Also time torch with 1 thread.")
_SCALING = flags.DEFINE_bool("scaling", True, "Run the scaling sweeps.")
_SCALING_MODELS = flags.DEFINE_list("scaling_models", ["lstm", "transformer"],
                                    "Models in the scaling sweeps.")
_COUNT_OPS = flags.DEFINE_bool("count_ops", True, "Count executed ops with the profiler.")
_OUT_DIR = flags.DEFINE_string("out_dir", os.path.join(_REPO_ROOT, "experiments", "results"),
                               "Where the JSON, markdown and plots go.")
_NAME = flags.DEFINE_string("name", None, "Output file stem (default benchmark_<backend>).")


def config_from_flags() -> BenchConfig:
  """The preset's config, with the flags given on the command line applied over it."""
  given = lambda flag: flags.FLAGS[flag.name].present
  ints = lambda v: tuple(int(x) for x in v)
  convert = [(_MODELS, "models", tuple), (_DTYPE, "dtype", str), (_BATCH, "batch_size", int),
             (_HIDDEN, "hidden_size", int), (_LAYERS, "num_layers", int),
             (_SEQ_LENS, "train_seq_lens", ints), (_SAMPLE_BATCHES, "sample_batches", ints),
             (_TORCH, "torch", bool), (_TORCH_THREADS, "torch_threads", int),
             (_TORCH_ONE, "torch_one_thread", bool), (_SCALING, "scaling", bool),
             (_SCALING_MODELS, "scaling_models", tuple), (_COUNT_OPS, "count_ops", bool),
             (_SAMPLE_FRAMES, "sample_frames", int), (_REPEATS, "repeats", int),
             (_SAMPLE_REPEATS, "sample_repeats", int),
             (_TORCH_SAMPLE_FRAMES, "torch_sample_frames", int), (_ONLY, "only", tuple)]
  overrides = {field: cast(flag.value) for flag, field, cast in convert
               if given(flag) and flag.value is not None}
  unknown = set(overrides.get("models", ())) - set(MODELS)
  if unknown:
    raise app.UsageError(f"unknown --models {sorted(unknown)}; choose from {', '.join(MODELS)}")
  presets = {"full": BenchConfig, "quick": BenchConfig.quick, "gpu": BenchConfig.gpu,
             "gpu_bf16": BenchConfig.gpu_bf16}
  return presets["quick" if _QUICK.value else _PRESET.value](**overrides)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = config_from_flags()
  name = _NAME.value or f"benchmark_{jax.default_backend()}"
  save = lambda results: report.write_outputs(results, _OUT_DIR.value, name, plots=False)
  results = run_benchmark(cfg, save)
  paths = report.write_outputs(results, _OUT_DIR.value, name, plots=cfg.plots)
  for r in results.get("training", []):
    print(f"train  {r['model']:<11} T={r['seq_len']:<4} {_ratio_text(r)}")
  for r in results.get("sampling", []):
    print(f"sample {r['model']:<11} {r['head']:<11} B={r['batch_size']:<4} {_ratio_text(r)}")
  print(json.dumps({"targets": results["targets"], "outputs": paths}, indent=1))


if __name__ == "__main__":
  app.run(main)

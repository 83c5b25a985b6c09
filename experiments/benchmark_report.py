"""The benchmark's report: targets met, the markdown tables and the scaling plot.

`experiments/benchmark.py` measures; this module only formats what it measured.
"""

from __future__ import annotations

import json
import os

from absl import logging

PRIME_FRAMES = 10  # as the measurements prime generation


RECURRENT_AND_TRANSFORMER = ("rnn", "lstm", "transformer")


def check_targets(results: dict) -> dict:
  """The targets, evaluated on ratios measured side by side (against the faster torch)."""
  out = {}
  train_rows = [r for r in results.get("training", []) if "ratio_vs_best_torch" in r]
  if train_rows:
    out["training >= 1.5x torch (bilstm >= 1.0x)"] = {
        f"{r['model']}@{r['seq_len']}": round(r["ratio_vs_best_torch"], 2) >= (
            1.0 if r["model"] == "bilstm" else 1.5) for r in train_rows}
  if results.get("train_command"):
    out["train command >= 90% of its bare step"] = results["train_command"]["ratio"] >= 0.9
  sample_rows = [r for r in results.get("sampling", []) if "ratio_vs_best_torch" in r and
                 r["model"] in RECURRENT_AND_TRANSFORMER]
  for batch, need in ((64, 10), (1, 30)):
    rows = [r for r in sample_rows if r["batch_size"] == batch]
    if rows:
      out[f"sampling at batch {batch} >= {need}x torch"] = {
          r["model"]: r["ratio_vs_best_torch"] >= need for r in rows}
  ops = {(r["model"], r["head"]): r["ops_per_frame"] for r in results.get("ops_per_frame", [])}
  if ("lstm", "independent") in ops:
    out["lstm (independent head) <= 40 ops per frame"] = ops[("lstm", "independent")] <= 40
  nade = [r for r in results.get("sampling", []) if "cost_vs_independent" in r]
  if nade:
    out["nade sampler <= 3x the independent head per frame"] = {
        f"{r['model']}@{r['batch_size']}": r["cost_vs_independent"] <= 3 for r in nade}
  flat = results.get("scaling", {}).get("frame_time_flatness", {})
  if flat:
    out["time per frame flat within 1.2x from 256 to 4096 frames"] = {
        m: f["max_over_min"] <= 1.2 for m, f in flat.items()}
  return out


def _extra_sections(results: dict) -> list[str]:
  """Ops per frame, the train command, memory, and the largest batch."""
  lines = []
  if results.get("ops_per_frame"):
    lines += ["", "## Ops per generated frame (optimized HLO; each op is a kernel on a GPU)",
              "", "Counted by `experiments/hlo_ops.py`: the ops the compiled sampler executes "
              "for 512 frames minus those for 256, per frame (the randomness of each block of "
              "frames, drawn ahead of the loop, included). The NADE's inner loop runs once per "
              "sampled note plus once; its ops per run are listed apart.", "",
              "| model | head | ops per frame | ops per NADE loop run |", "|---|---|---|---|"]
    for r in results["ops_per_frame"]:
      loops = ", ".join(str(x) for x in r["data_dependent_loop_ops"]) or "-"
      lines.append(f"| {r['model']} | {r['head']} | {r['ops_per_frame']:.0f} | {loops} |")
  command = results.get("train_command")
  if command:
    lines += ["", "## The train command against its bare step", "",
              f"`train_and_evaluate` ({command['model']}, seq_len {command['seq_len']}, batch "
              f"{command['batch_size']}, {command['steps']} steps on synthetic pieces; batches "
              "prepared in a thread, metrics read at log steps only): median "
              f"{_fmt(command['train_command_frames_per_s'])} frames/s against "
              f"{_fmt(command['bare_step_frames_per_s'])} for the bare compiled step: "
              f"**{100 * command['ratio']:.0f}%**."]
  if results.get("memory"):
    lines += ["", "## Memory at a large size", "",
              "| what | model | batch | seq_len / frames | XLA arguments MiB | outputs MiB | "
              "temps MiB | device peak MiB | RSS peak MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["memory"]:
      x = r["xla"] or {}
      lines.append(f"| {r['what']} | {r['model']} | {r['batch_size']} | "
                   f"{r.get('seq_len', r.get('num_frames'))} | {_mib(x.get('arguments'))} | "
                   f"{_mib(x.get('outputs'))} | {_mib(x.get('temps'))} | "
                   f"{_mib(r['device_peak_bytes'])} | {_mib(r['rss_peak_bytes'])} |")
    lines += [f"\n{r['model']} {r['what']} did not fit: {r['does_not_fit']}"
              for r in results["memory"] if r.get("does_not_fit")]
  largest = results.get("largest_batch")
  if largest:
    lines += ["", f"## Training at the largest batch that fits", "",
              f"{largest['model']}, seq_len {largest['seq_len']}: batch "
              f"{largest['batch_size']} (the next power of two did not fit), "
              f"{_fmt(largest['frames_per_s'])} frames/s, {largest['step_s'] * 1e3:.1f} ms per "
              "step."]
  return lines


def _fmt(x, digits=2):
  if x is None:
    return "-"
  if isinstance(x, float):
    if x != x:
      return "-"
    if abs(x) >= 1000:
      return f"{x:,.0f}"
    return f"{x:.{digits}f}"
  return str(x)


def _mib(b):
  return "-" if b is None else f"{b / 2**20:.1f}"


def markdown(results: dict, plot_files: list[str]) -> str:
  m = results["machine"]
  lines = [
      "# musicgen-jax benchmark: JAX vs a PyTorch reference, and scaling", "",
      f"- date: {results['date']}",
      f"- command: `{results['command']}`",
      f"- machine: {m['platform']} ({m['device']}), {m['cpu_cores']} CPU cores, "
      f"{m['processor']}; jax {m['jax']}, torch {m['torch']} "
      f"(torch.set_num_threads({m['torch_threads']}) = the core count; also timed with 1 thread)",
      f"- load average (1, 5, 15 min): start {m['load_average_start']}, after training "
      f"{m.get('load_average_after_training')}, after sampling "
      f"{m.get('load_average_after_sampling')}, end {m.get('load_average_end')}",
      f"- model size: hidden {results['config']['hidden_size']}, {results['config']['num_layers']} "
      f"layers, dtype {results['config']['dtype']} (torch: float32); synthetic frames",
      f"- total time: {results['seconds']} s; memory: {results['memory_source']}",
      "",
      "Ratios are JAX / PyTorch speed (> 1: JAX faster), each the median over interleaved "
      "rounds of the per-round ratio; `best` is against the faster torch setting "
      "(threads = cores, or 1 thread).", "",
      "## Training (make_train_step: forward, backward, clip, AdamW)", "",
      "| model | seq_len | batch | compile s | JAX steps/s | JAX frames/s | torch frames/s "
      "| torch 1-thr frames/s | ratio vs torch | ratio vs torch 1-thr | ratio vs best |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results.get("training", []):
    lines.append(
        f"| {r['model']} | {r['seq_len']} | {r['batch_size']} | {_fmt(r['compile_s'])} | "
        f"{_fmt(r['jax']['steps_per_s'])} | {_fmt(r['jax']['frames_per_s'])} | "
        f"{_fmt(r.get('torch', {}).get('frames_per_s'))} | "
        f"{_fmt(r.get('torch_1thread', {}).get('frames_per_s'))} | "
        f"{_fmt(r.get('ratio_vs_torch'))} | {_fmt(r.get('ratio_vs_torch_1thread'))} | "
        f"**{_fmt(r.get('ratio_vs_best_torch'))}** |")
  lines += ["", "Frames/s counts input frames (batch x seq_len) for every model; the bilstm "
            "predicts one frame per window.", "",
            "## Sampling (make_sampler over decode_step: one lax.scan)", "",
            f"JAX generates {results['config']['sample_frames']} frames after a "
            f"{PRIME_FRAMES}-frame prime; the torch per-frame loop is timed over "
            f"{results['config']['torch_sample_frames']} frames (its cost per frame is constant "
            "once the window is full; the shorter run slightly favours torch).", "",
            "| model | head | batch | compile s | JAX frames/s | torch frames/s | torch 1-thr "
            "frames/s | ratio vs torch | ratio vs torch 1-thr | ratio vs best | cost vs "
            "independent |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results.get("sampling", []):
    lines.append(
        f"| {r['model']} | {r.get('head', 'independent')} | {r['batch_size']} | "
        f"{_fmt(r['compile_s'])} | "
        f"{_fmt(r['jax']['frames_per_s'])} | {_fmt(r.get('torch', {}).get('frames_per_s'))} | "
        f"{_fmt(r.get('torch_1thread', {}).get('frames_per_s'))} | "
        f"{_fmt(r.get('ratio_vs_torch'))} | {_fmt(r.get('ratio_vs_torch_1thread'))} | "
        f"**{_fmt(r.get('ratio_vs_best_torch'))}** | {_fmt(r.get('cost_vs_independent'))} |")
  lines += _extra_sections(results)
  sc = results.get("scaling")
  if sc:
    lines += ["", "## Scaling (JAX)", "", "### Training step vs seq_len "
              f"(batch {results['config']['batch_size']}; transformer context = seq_len)", "",
              "| model | seq_len | s/step | frames/s | XLA buffers MiB | RSS peak MiB |",
              "|---|---|---|---|---|---|"]
    for r in sc["train_vs_seq_len"]:
      lines.append(f"| {r['model']} | {r['seq_len']} | {r['step_s']:.4f} | "
                   f"{_fmt(r['frames_per_s'])} | {_mib((r['xla_memory_bytes'] or {}).get('total'))} "
                   f"| {_mib(r['rss_peak_bytes'])} |")
    lines += ["", f"### Training step vs batch size (seq_len {results['config']['scaling_seq_len']})",
              "", "| model | batch | s/step | frames/s | XLA buffers MiB |", "|---|---|---|---|---|"]
    for r in sc["train_vs_batch"]:
      lines.append(f"| {r['model']} | {r['batch_size']} | {r['step_s']:.4f} | "
                   f"{_fmt(r['frames_per_s'])} | {_mib((r['xla_memory_bytes'] or {}).get('total'))} |")
    lines += ["", "### Time per generated frame vs output length "
              f"(batch {results['config']['scaling_sample_batch']})", "",
              "| model | frames | s/frame | frames/s | XLA buffers MiB | XLA temps MiB |",
              "|---|---|---|---|---|---|"]
    for r in sc["sample_vs_length"]:
      mem = r["xla_memory_bytes"] or {}
      lines.append(f"| {r['model']} | {r['num_frames']} | {r['frame_s']:.3e} | "
                   f"{_fmt(r['frames_per_s'])} | {_mib(mem.get('total'))} | {_mib(mem.get('temps'))} |")
    lines += ["", "Flatness (max / min time per frame over the lengths): " + ", ".join(
        f"{k} {v['max_over_min']:.2f}" for k, v in sc["frame_time_flatness"].items()) +
              ". XLA buffers and temps grow only with the output array [batch, frames, 107] (the "
              "scan's stacked output and its concatenation with the prime); the loop state "
              "(carry, KV cache, window) does not depend on the length."]
  est = results.get("accelerator_estimate")
  if est:
    lines += ["", "## Cost per frame and an H100 estimate", "",
              "FLOPs and bytes from XLA's `cost_analysis()` of the compiled program on this backend "
              "(bytes are an upper bound: a GPU fuses more; a while loop's body is counted "
              "once, so recurrent train steps are undercounted by about seq_len); executed "
              "ops counted from a profiler trace of one call (CPU thunks: an upper bound on "
              "GPU kernels, which fuse more). H100 bounds: FLOPs / "
              f"{'989 (bf16)' if results['config']['dtype'] == 'bfloat16' else '495 (TF32)'} "
              "TFLOP/s, bytes / 3.35 TB/s, ops x 4 us per dependent kernel.", "",
              "| what | model | batch | FLOP/frame | bytes/frame | FLOP/byte | ops | "
              "compute us | HBM us | launch us | limit | H100 frames/s (est.) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in est:
      lines.append(
          f"| {r['kind']} | {r['model']} | {r['batch_size']} | {r['flops_per_frame']:.3g} | "
          f"{r['bytes_per_frame']:.3g} | {r['intensity_flops_per_byte']:.2f} | "
          f"{_fmt(r['executed_ops'])} | {r['h100_compute_s'] * 1e6:.2f} | "
          f"{r['h100_memory_s'] * 1e6:.2f} | {r['h100_launch_s'] * 1e6:.1f} | {r['h100_limit']} | "
          f"{_fmt(r['h100_frames_per_s_estimate'])} |")
  if results.get("targets"):
    lines += ["", "## Targets", "", "```", json.dumps(results["targets"], indent=1), "```"]
  if plot_files:
    lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})"
                                     for p in plot_files]
  return "\n".join(lines) + "\n"


def plot(results: dict, out_dir: str, name: str) -> list[str]:
  sc = results.get("scaling")
  if not sc:
    return []
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning("matplotlib missing: no plots")
    return []
  panels = [("train_vs_seq_len", "seq_len", "step_s", "training: s/step vs seq_len", True),
            ("train_vs_batch", "batch_size", "step_s", "training: s/step vs batch", True),
            ("sample_vs_length", "num_frames", "frame_s", "sampling: s/frame vs length", False)]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for ax, (key, x, y, title, loglog) in zip(axes, panels):
    for model in sorted({r["model"] for r in sc[key]}):
      pts = [r for r in sc[key] if r["model"] == model]
      ax.plot([r[x] for r in pts], [r[y] for r in pts], "o-", label=model)
    ax.set_xscale("log")
    if loglog:
      ax.set_yscale("log")
    else:
      ax.set_ylim(bottom=0)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  m = results["machine"]
  fig.suptitle(f"musicgen-jax on {m['platform']} ({m['cpu_cores']} cores, load "
               f"{m['load_average_start']})")
  fig.tight_layout()
  path = os.path.join(out_dir, f"{name}_scaling.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return [path]


def write_outputs(results: dict, out_dir: str, name: str, plots: bool = True) -> dict[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  plot_files = plot(results, out_dir, name) if plots else []
  paths = {"json": os.path.join(out_dir, f"{name}.json"),
           "markdown": os.path.join(out_dir, f"{name}.md")}
  with open(paths["json"], "w") as f:
    json.dump(results, f, indent=1)
  with open(paths["markdown"], "w") as f:
    f.write(markdown(results, plot_files))
  for i, p in enumerate(plot_files):
    paths[f"plot_{i}"] = p
  return paths



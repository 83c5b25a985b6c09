"""The benchmark's smallest configuration runs end to end and writes the expected report."""

import importlib.util
import json
import os

import pytest

from experiments import benchmark, benchmark_report

# One tiny model; every sweep point reuses the one train program and the one sampler.
_TINY = dict(models=("rnn",), hidden_size=8, num_layers=1, num_heads=2, batch_size=2,
             train_seq_lens=(8,), sample_batches=(2,), sample_frames=8, sample_window=8,
             repeats=2, round_seconds=0.01, sample_repeats=1, torch_sample_frames=4,
             scaling_models=("rnn",), scaling_seq_lens=(8,), scaling_batches=(2,),
             scaling_seq_len=8, scaling_lengths=(8,), scaling_sample_batch=2,
             scaling_repeats=1, count_ops=False, train_command_steps=24, memory_batch=2,
             memory_seq_len=16)


def _has_torch() -> bool:
  return importlib.util.find_spec("torch") is not None


def test_smallest_benchmark_writes_json_and_markdown(tmp_path):
  with_torch = _has_torch() and os.environ.get("BENCHMARK_TEST_TORCH") == "1"
  cfg = benchmark.BenchConfig(torch=with_torch, **_TINY)
  results = benchmark.run_benchmark(cfg)
  paths = benchmark_report.write_outputs(results, str(tmp_path), "benchmark_test", plots=False)

  with open(paths["json"]) as f:
    data = json.load(f)
  for key in ("date", "command", "machine", "config", "training", "sampling", "scaling",
              "accelerator_estimate", "memory_source", "targets"):
    assert key in data, key
  assert data["machine"]["cpu_cores"] >= 1
  assert len(data["machine"]["load_average_start"]) in (0, 3)

  (train_row,) = data["training"]
  assert train_row["model"] == "rnn" and train_row["seq_len"] == 8
  assert train_row["compile_s"] > 0
  assert train_row["jax"]["steps_per_s"] > 0 and train_row["jax"]["frames_per_s"] > 0
  assert len(train_row["jax"]["rounds_s"]) == 2
  independent, nade = data["sampling"]
  assert (independent["head"], nade["head"]) == ("independent", "nade")
  assert independent["jax"]["frames_per_s"] > 0 and independent["num_frames"] == 8
  assert nade["cost_vs_independent"] > 0
  ops = {r["head"]: r for r in data["ops_per_frame"]}
  assert 0 < ops["independent"]["ops_per_frame"] < ops["nade"]["ops_per_frame"]
  assert ops["nade"]["data_dependent_loop_ops"]  # the NADE's loop over a frame's notes
  command = data["train_command"]
  assert command["train_command_frames_per_s"] > 0 and command["ratio"] > 0
  assert {r["what"] for r in data["memory"]} == {"train step", "sampled batch"}
  if with_torch:
    assert train_row["ratio_vs_best_torch"] > 0 and independent["ratio_vs_best_torch"] > 0

  scaling = data["scaling"]
  assert {r["seq_len"] for r in scaling["train_vs_seq_len"]} == {8}
  assert scaling["train_vs_batch"][0]["step_s"] > 0
  assert scaling["sample_vs_length"][0]["frame_s"] > 0
  assert scaling["sample_vs_length"][0]["rss_peak_bytes"] > 0

  kinds = {(r["kind"], r["batch_size"]) for r in data["accelerator_estimate"]}
  assert kinds == {("train_step", 2), ("generated_frame", 2)}
  for r in data["accelerator_estimate"]:
    assert r["flops_per_frame"] > 0 and r["h100_frames_per_s_estimate"] > 0

  with open(paths["markdown"]) as f:
    text = f.read()
  assert "## Training" in text and "## Sampling" in text and "## Scaling" in text
  assert "## Ops per generated frame" in text and "## Memory" in text


@pytest.mark.skipif(not _has_torch(), reason="PyTorch is not installed")
def test_torch_reference_trains_and_samples():
  import torch  # pylint: disable=g-import-not-at-top
  from experiments import torch_reference  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)  # tiny tensors: more threads only add contention
  trainer = torch_reference.Trainer("lstm", hidden=8, layers=1)
  batch = torch.from_numpy(benchmark.random_frames(2, 6))
  losses = [float(trainer.step(batch)) for _ in range(3)]
  assert losses[-1] < losses[0]
  frames = torch_reference.generate("transformer", torch_reference.build("transformer", 8, 1, 2),
                                    batch[:, :3], 4, window=4)
  assert frames.shape == (2, 7, 107)
  assert set(frames[:, 3:, :106].unique().tolist()) <= {0.0, 1.0}


def test_the_profile_names_what_each_op_does():
  from experiments import profile_ops
  assert profile_ops.category("ynn_fusion.38") == "matmul"
  assert profile_ops.category("while.12") == "loop"
  assert profile_ops.category("copy_bitcast_fusion.5") == "data movement"
  assert profile_ops.category("bitcast_dynamic-update-slice_fusion.1") == "data movement"
  assert profile_ops.category("broadcast_add_fusion.8") == "elementwise and reductions"
  assert profile_ops.category("exponential_log-plus-one_fusion") == "elementwise and reductions"

"""The programs end to end: launch/local.sh trains, evaluate scores, and two processes
(launch/multihost_local.sh, gloo collectives) end with the parameters of one."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from musicgen_jax import workdir as workdir_lib
from musicgen_jax.encoding import frames_to_midi
from toy import toy_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("midi")
  for i in range(12):
    frames_to_midi(toy_frames(i, 30)).save(str(folder / f"piece_{i:02d}.mid"))
  return folder


def _flags(midi_dir, workdir, cache):
  return [f"--workdir={workdir}", "--dataset=midi_dir", f"--data_dir={midi_dir}",
          f"--cache_dir={cache}", "--num_workers=1", "--valid_fraction=0.3",
          "--test_fraction=0.3", "--model=rnn", "--hidden_size=8", "--num_layers=1",
          "--seq_len=8", "--batch_size=4", "--num_steps=4", "--log_every=1", "--eval_every=0",
          "--checkpoint_every=4", "--max_duration_steps=24"]


def _run(cmd, **kw):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
                        **kw)


@pytest.fixture(scope="module")
def trained(midi_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  workdir = root / "local"
  proc = _run(["bash", "launch/local.sh", *_flags(midi_dir, workdir, root / "cache")])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return root, workdir, proc


def test_local_train_prints_result_and_writes_workdir(trained):
  _, workdir, proc = trained
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["step"] == 4 and np.isfinite(result["valid_nll"])
  assert (workdir / "config.json").exists() and (workdir / "checkpoints" / "4").exists()
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 4


def test_evaluate_cli(trained):
  _, workdir, _ = trained
  proc = _run([sys.executable, "-m", "musicgen_jax.evaluate", f"--workdir={workdir}",
               "--split=test"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = json.loads(proc.stdout.strip().splitlines()[-1])
  written = json.loads((workdir / "eval_test.json").read_text())
  assert printed == written
  for key in ("nll", "nll_notes", "nll_duration", "note_accuracy", "num_frames"):
    assert key in written
  assert written["nll"] == pytest.approx(written["nll_notes"] + written["nll_duration"])
  assert written["num_frames"] > 0 and written["step"] == 4


def test_evaluate_cli_without_checkpoint_is_one_line_error(tmp_path):
  proc = _run([sys.executable, "-m", "musicgen_jax.evaluate", f"--workdir={tmp_path}"])
  assert proc.returncode != 0
  assert "has no config.json" in proc.stderr and "Traceback" not in proc.stderr


def test_multihost_local_matches_local(trained, midi_dir):
  root, workdir, _ = trained
  hosts = root / "hosts"
  proc = _run(["bash", "launch/multihost_local.sh", "2",
               *_flags(midi_dir, hosts, root / "cache")])
  assert proc.returncode == 0, proc.stderr[-3000:]
  losses = lambda w: [json.loads(l)["train_loss"] for l in open(w / "metrics.jsonl")]
  np.testing.assert_allclose(losses(hosts), losses(workdir), rtol=1e-5)
  params = lambda w: workdir_lib.load_run(str(w)).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               params(hosts), params(workdir))


def _free_port():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _hosts(flags, stop_after_first_log=None):
  """Two processes of one job on localhost; SIGTERM to the second once it has logged."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "musicgen_jax.train", *flags,
                             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                             f"--process_id={i}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
           for i in range(2)]
  if stop_after_first_log is not None:
    import time  # pylint: disable=g-import-not-at-top
    deadline = time.time() + 120
    while time.time() < deadline and not (stop_after_first_log.exists() and
                                          stop_after_first_log.read_text().strip()):
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
  return [(p,) + p.communicate(timeout=240) for p in procs]


LONG = ("--num_steps=400", "--checkpoint_every=100000", "--log_every=50")


def test_sigterm_to_one_host_stops_every_host_at_one_step(midi_dir, tmp_path):
  flags = lambda w: [*_flags(midi_dir, w, tmp_path / "cache"), *LONG]
  for proc, _, stderr in _hosts(flags(tmp_path / "straight")):
    assert proc.returncode == 0, stderr[-2000:]
  stopped = _hosts(flags(tmp_path / "w"), stop_after_first_log=tmp_path / "w" / "metrics.jsonl")
  steps = []
  for i, (proc, _, stderr) in enumerate(stopped):
    assert proc.returncode == 143, stderr[-2000:]
    line = [l for l in stderr.splitlines() if l.startswith("stopped:")]
    assert len(line) == 1 and "checkpoint" in line[0], stderr[-2000:]
    assert "SIGTERM" in line[0]
    steps.append(int(line[0].split(" at step ")[1].split()[0]))
  assert steps[0] == steps[1] < 400
  assert workdir_lib.checkpoint_steps(tmp_path / "w") == [steps[0]]
  for proc, _, stderr in _hosts(flags(tmp_path / "w")):
    assert proc.returncode == 0, stderr[-2000:]
  params = lambda w: jax.tree.map(np.asarray, workdir_lib.load_run(str(w), 400).params)
  jax.tree.map(np.testing.assert_array_equal, params(tmp_path / "w"),
               params(tmp_path / "straight"))

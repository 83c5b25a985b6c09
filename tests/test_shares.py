"""Training shares: each share's part of a batch drawn from its pieces alone; two processes
(gloo), each opening only its shards, train as one process holding both shares does; a run
killed (SIGKILL, SIGTERM) and resumed ends where a straight run ends."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from musicgen_jax import workdir as workdir_lib
from musicgen_jax.data import Piece, ShareBatches, StreamBatches, WindowBatches
from musicgen_jax.data import batches as batches_lib
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, frames_to_midi
from toy import toy_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _marked(k: int, length: int = 30) -> np.ndarray:
  """A piece whose every frame has duration k (so a frame tells its piece)."""
  frames = np.zeros((length, FRAME_DIM), np.float32)
  frames[np.arange(length), np.arange(length) % 40 + 20] = 1.0
  frames[:, DURATION_INDEX] = k
  return frames


@pytest.mark.parametrize("kind", [WindowBatches, StreamBatches])
def test_each_part_comes_from_its_share_and_one_process_equals_two(kind):
  pieces = [Piece(f"p{k}", _marked(k + 1)) for k in range(6)]
  shares = {h: pieces[h::2] for h in range(2)}
  both = ShareBatches(kind, shares, 2, 7, 8, seed=3, transpose_range=2)
  alone = [ShareBatches(kind, {h: shares[h]}, 2, 7, 8, seed=3, transpose_range=2)
           for h in range(2)]
  for step in (0, 1, 9):
    batch = both.train_batch(step)
    parts = [a.train_batch(step) for a in alone]
    for key, value in batch.items():
      np.testing.assert_array_equal(value, np.concatenate([p[key] for p in parts]))
    for h, part in enumerate(parts):  # durations 1, 3, 5 in share 0; 2, 4, 6 in share 1
      seen = set(np.unique(part["frames"][..., DURATION_INDEX])) - {0.0}
      assert seen and seen <= {float(k + 1) for k in range(h, 6, 2)}
  # The two parts are not one draw twice.
  assert not np.array_equal(*[p["frames"] for p in parts])


def test_shares_must_divide_among_processes_and_the_batch():
  assert list(batches_lib.held_shares(4, 1, 2)) == [2, 3]
  with pytest.raises(ValueError, match="does not divide among 2 processes"):
    batches_lib.held_shares(3, 0, 2)
  pieces = [Piece("a", toy_frames(0, 30))]
  with pytest.raises(ValueError, match="does not divide into 2 shares"):
    ShareBatches(WindowBatches, {0: pieces, 1: pieces}, 2, 7, 5, seed=0)
  with pytest.raises(ValueError, match="share 1 of 2 has no pieces"):
    ShareBatches(WindowBatches, {0: pieces, 1: []}, 2, 7, 4, seed=0)


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("midi")
  for i in range(14):
    frames_to_midi(toy_frames(i, 40)).save(str(folder / f"piece_{i:02d}.mid"))
  return folder


def _flags(midi_dir, workdir, cache, *extra):
  return [f"--workdir={workdir}", "--dataset=midi_dir", f"--data_dir={midi_dir}",
          f"--cache_dir={cache}", "--num_workers=1", "--valid_fraction=0.2",
          "--test_fraction=0.1", "--shard_files=2", "--data_shares=2", "--model=lstm",
          "--hidden_size=8", "--num_layers=1", "--seq_len=8", "--batch_size=4",
          "--log_every=1", "--eval_every=0", "--max_duration_steps=24", *extra]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return env


def _train(flags, processes=1, timeout=300):
  if processes == 1:
    cmd = [sys.executable, "-m", "musicgen_jax.train", *flags]
  else:
    cmd = ["bash", "launch/multihost_local.sh", str(processes), *flags]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                        cwd=ROOT)


STEPS = 600


@pytest.fixture(scope="module")
def straight(midi_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("shares")
  proc = _train(_flags(midi_dir, root / "one", root / "cache", f"--num_steps={STEPS}",
                       f"--checkpoint_every={STEPS}"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return root, proc


def _losses(workdir):
  return [json.loads(line)["train_loss"] for line in open(workdir / "metrics.jsonl")]


def _params(workdir):
  return jax.tree.map(np.asarray, workdir_lib.load_run(str(workdir)).params)


def test_two_processes_each_open_their_shards_and_train_as_one(straight, midi_dir):
  root, one = straight
  assert "training share 0 of 2" in one.stderr and "training share 1 of 2" in one.stderr
  hosts = root / "hosts"
  proc = _train(_flags(midi_dir, hosts, root / "cache", f"--num_steps={STEPS}",
                       f"--checkpoint_every={STEPS}"), processes=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Each process holds one share: shards 0, 2, 4, ... or 1, 3, 5, ...
  for p in range(2):
    line = next(l for l in proc.stderr.splitlines() if f"process {p} of 2: training share" in l)
    assert f"share {p} of 2" in line
    shards = [int(n) for n in line.split("of shards ")[1].split(", ")]
    assert shards and all(n % 2 == p for n in shards)
  np.testing.assert_allclose(_losses(hosts), _losses(root / "one"), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               _params(hosts), _params(root / "one"))


def _wait_for_steps(workdir, count, proc, limit_s=120):
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + limit_s
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
      return
    time.sleep(0.02)


def test_killed_and_preempted_runs_resume_to_the_straight_result(straight, midi_dir):
  root, one = straight
  workdir = root / "stopped"
  flags = _flags(midi_dir, workdir, root / "cache", f"--num_steps={STEPS}",
                 "--checkpoint_every=20")
  stops = []
  # Batches made by worker processes (Grain) where the grain package is installed.
  workers = ["--input_workers=2"] if importlib.util.find_spec("grain") else []
  for sig, after in ((signal.SIGKILL, 30), (signal.SIGTERM, 100)):
    proc = subprocess.Popen([sys.executable, "-m", "musicgen_jax.train", *flags, *workers],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT)
    _wait_for_steps(workdir, after, proc)
    if proc.poll() is None:
      proc.send_signal(sig)
      stops.append(sig)
    proc.communicate(timeout=120)
  assert stops == [signal.SIGKILL, signal.SIGTERM]  # both really interrupted the run
  proc = _train(flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resuming from checkpoint" in proc.stderr
  final = json.loads(proc.stdout.strip().splitlines()[-1])
  expected = json.loads(one.stdout.strip().splitlines()[-1])
  assert final["step"] == STEPS and final["valid_nll"] == expected["valid_nll"]
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), _params(root / "one"))


def test_batches_made_in_worker_processes_are_the_thread_s(tmp_path):
  pytest.importorskip("grain")
  from musicgen_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import DataConfig, load_dataset  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import workers  # pylint: disable=g-import-not-at-top
  from toy import toy_config, toy_dataset  # pylint: disable=g-import-not-at-top
  music = tmp_path / "music"
  music.mkdir()
  for i in range(6):
    frames_to_midi(toy_frames(i, 40)).save(str(music / f"p{i}.mid"))
  dataset = load_dataset(DataConfig(dataset="midi_dir", data_dir=str(music), num_workers=1,
                                    cache_dir=str(tmp_path / "cache"), shard_files=2))
  batches = StreamBatches(dataset.train, 8, 4, seed=1, transpose_range=2)
  made = workers.worker_batches(batches, range(3, 11), num_workers=2)
  try:
    for step in range(3, 11):
      got = next(made)
      for key, value in batches.train_batch(step).items():
        np.testing.assert_array_equal(got[key], value)
    with pytest.raises(StopIteration):
      next(made)
  finally:
    made.close()
  # The training loop reads them in order: the same parameters as batches made in a thread.
  final = []
  for input_workers in (0, 2):
    workdir = tmp_path / f"w{input_workers}"
    train_lib.train_and_evaluate(toy_config(num_steps=6, eval_every=0, checkpoint_every=6,
                                            input_workers=input_workers),
                                 str(workdir), dataset=toy_dataset())
    final.append(_params(workdir))
  jax.tree.map(np.testing.assert_array_equal, *final)

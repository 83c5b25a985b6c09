"""Reliability, round two: each defect found by trying the programs as a user would.

Each test here failed on the code before its fix (see the closing note of that work).
"""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import jax
import mido
import numpy as np
import pytest

from musicgen_jax import encode_midi, evaluate, frames_to_midi, generate, midi_to_frames
from musicgen_jax import train as train_lib
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.config import RunConfig
from musicgen_jax.data import DataConfig, load_dataset
from musicgen_jax.encoding import LOWEST_PITCH, NUM_NOTES
from musicgen_jax.models import ModelConfig, init_params
from toy import toy_config, toy_dataset, toy_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, timeout=240, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        timeout=timeout, env=env, cwd=ROOT, **kwargs)


def _one_error_line(proc):
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith(("error:", "FATAL"))]
  assert len(lines) == 1, proc.stderr[-2000:]
  return lines[0]


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("midi")
  for i in range(10):
    frames_to_midi(toy_frames(i, 40), tempo_bpm=92).save(str(folder / f"piece_{i:02d}.mid"))
  return folder


def _train_flags(midi_dir, workdir, cache, *extra):
  return [f"--workdir={workdir}", "--dataset=midi_dir", f"--data_dir={midi_dir}",
          f"--cache_dir={cache}", "--num_workers=1", "--valid_fraction=0.2",
          "--test_fraction=0.2", "--model=lstm", "--hidden_size=8", "--num_layers=1",
          "--seq_len=8", "--batch_size=4", "--num_steps=3", "--log_every=1", "--eval_every=0",
          "--checkpoint_every=3", "--max_duration_steps=24", *extra]


@pytest.fixture(scope="module")
def trained(midi_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  workdir = root / "w"
  proc = _run("musicgen_jax.train", *_train_flags(midi_dir, workdir, root / "cache"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return root, workdir


# 1. Evaluation memory is bounded by a chunk, not by a piece's length.

_MEMORY_PROBE = """
import resource, sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from musicgen_jax import evaluate
from musicgen_jax.models import ModelConfig, init_params
from toy import toy_frames
cfg = ModelConfig(model="lstm", hidden_size=8, num_layers=1, max_duration_steps=24)
params = init_params(cfg, jax.random.key(0))
evaluate.evaluate_pieces(cfg, params, [toy_frames(0, 600)])  # compiles, warms up
piece = np.tile(toy_frames(1, 1000), (40, 1))  # 40,000 frames
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = evaluate.evaluate_pieces(cfg, params, [piece])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(result["num_frames"], (after - before) * 1024)
"""
# Bytes over the warmed-up process: the piece itself is 17 MB; scored in one pass (chunk =
# its length) it asks for about 140 GB and fails (measured).
MEMORY_BOUND = 200 * 2**20


def test_evaluating_a_40k_frame_piece_stays_under_a_memory_bound():
  probe = _MEMORY_PROBE.format(tests=os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        timeout=300, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  frames, growth = map(int, proc.stdout.split())
  assert frames == 39_999
  assert growth < MEMORY_BOUND, f"peak memory grew by {growth / 2**20:.0f} MiB"


def test_chunked_nll_equals_one_pass_over_a_long_piece():
  cfg = ModelConfig(model="lstm", hidden_size=8, num_layers=1, max_duration_steps=24)
  params = init_params(cfg, jax.random.key(0))
  piece = np.tile(toy_frames(2, 500), (10, 1))
  chunked = evaluate.evaluate_pieces(cfg, params, [piece], chunk=512)
  whole = evaluate.evaluate_pieces(cfg, params, [piece], chunk=len(piece))
  assert chunked["nll"] == pytest.approx(whole["nll"], rel=1e-5)


# 2. One owner per workdir.


def test_second_trainer_gets_one_line_naming_the_holder(midi_dir, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  with workdir_lib.WorkdirLock(str(workdir)):
    proc = _run("musicgen_jax.train", *_train_flags(midi_dir, workdir, tmp_path / "cache"))
  line = _one_error_line(proc)
  assert f"pid {os.getpid()}" in line and socket.gethostname() in line
  assert not (workdir / "config.json").exists()  # nothing written without the lock
  assert not (workdir / "metrics.jsonl").exists() and not (workdir / "checkpoints").exists()


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(
      {"pid": dead.pid, "host": socket.gethostname(), "since": "earlier"}))
  with workdir_lib.WorkdirLock(str(tmp_path)):
    holder = json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid()
  assert "taking over" in caplog.text and str(dead.pid) in caplog.text


def test_two_trainers_started_together_do_not_both_write(midi_dir, tmp_path):
  flags = _train_flags(midi_dir, tmp_path / "w", tmp_path / "cache", "--num_steps=40",
                       "--checkpoint_every=20")
  _run("musicgen_jax.prepare", *flags[1:6])  # the data cache first, so both start at once
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-m", "musicgen_jax.train", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  codes = sorted(p.returncode for p in procs)
  assert codes[0] == 0 and codes[1] != 0, [o[1][-500:] for o in outs]
  steps = [json.loads(l)["step"] for l in (tmp_path / "w" / "metrics.jsonl").open()]
  assert steps == sorted(set(steps))  # every step logged once


# 3. Validate everything before writing anything.


def test_a_bad_first_config_writes_nothing_and_the_corrected_command_runs(midi_dir, tmp_path):
  flags = _train_flags(midi_dir, tmp_path / "w", tmp_path / "cache", "--model=transformer",
                       "--hidden_size=32")
  line = _one_error_line(_run("musicgen_jax.train", *flags, "--num_heads=3"))
  assert "--num_heads" in line
  assert not (tmp_path / "w" / "config.json").exists()
  proc = _run("musicgen_jax.train", *flags, "--num_heads=4")
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_config_without_checkpoints_accepts_new_flags(midi_dir, tmp_path):
  workdir = tmp_path / "w"
  RunConfig.create(ModelConfig(hidden_size=16), DataConfig(cache_dir=str(tmp_path)),
                   toy_config().train).save(str(workdir))
  proc = _run("musicgen_jax.train", *_train_flags(midi_dir, workdir, tmp_path / "cache"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert RunConfig.load(str(workdir)).model.hidden_size == 8


def test_resuming_below_the_checkpoint_says_nothing_is_trained(trained, midi_dir):
  root, workdir = trained
  proc = _run("musicgen_jax.train", *_train_flags(midi_dir, workdir, root / "cache"),
              "--num_steps=2")
  assert proc.returncode == 0
  assert "already at step 3 of 2: nothing to train" in proc.stderr


# 4. Sampling never mixes old and new files.


def test_sampling_into_a_folder_with_samples_needs_overwrite(trained, midi_dir, tmp_path):
  _, workdir = trained
  prime = str(next(midi_dir.iterdir()))
  common = dict(num_frames=6, prime_midi=prime, prime_frames=4, plot=False, audio="none")
  generate.sample_workdir(str(workdir), str(tmp_path), num_samples=4, **common)
  with pytest.raises(ValueError, match="--overwrite"):
    generate.sample_workdir(str(workdir), str(tmp_path), num_samples=2, **common)
  generate.sample_workdir(str(workdir), str(tmp_path), num_samples=2, overwrite=True, **common)
  assert sorted(os.listdir(tmp_path)) == ["index.html", "sample_000.json", "sample_000.mid",
                                          "sample_001.json", "sample_001.mid"]


# 5. Tempo is kept.


def test_encoding_reports_tempo_and_time_signature(tmp_path):
  midi = frames_to_midi(toy_frames(0, 20), tempo_bpm=92, time_signature="3/4")
  frames, stats = encode_midi(midi)
  assert stats.tempo_bpm == pytest.approx(92, abs=0.01) and stats.time_signature == "3/4"
  path = str(tmp_path / "a.mid")
  midi.save(path)
  back = frames_to_midi(frames, tempo_bpm=stats.tempo_bpm, time_signature=stats.time_signature)
  assert back.length == pytest.approx(mido.MidiFile(path).length, rel=0.01)


def test_samples_primed_with_a_92_bpm_piece_play_at_92(trained, midi_dir, tmp_path):
  _, workdir = trained
  prime = str(next(midi_dir.iterdir()))
  common = dict(num_frames=6, prime_midi=prime, prime_frames=4, plot=False, num_samples=1)
  result = generate.sample_workdir(str(workdir), str(tmp_path / "a"), **common)
  tempos = [m.tempo for m in mido.MidiFile(result.midi_paths[0]).tracks[0]
            if m.type == "set_tempo"]
  assert [round(mido.tempo2bpm(t)) for t in tempos] == [92]
  assert result.record["tempo_bpm"] == pytest.approx(92, abs=0.01)
  result = generate.sample_workdir(str(workdir), str(tmp_path / "b"), tempo_bpm=60, **common)
  tempos = [m.tempo for m in mido.MidiFile(result.midi_paths[0]).tracks[0]
            if m.type == "set_tempo"]
  assert [round(mido.tempo2bpm(t)) for t in tempos] == [60]


def test_held_out_pieces_keep_their_tempo(midi_dir, tmp_path):
  dataset = load_dataset(DataConfig(dataset="midi_dir", data_dir=str(midi_dir),
                                    cache_dir=str(tmp_path), num_workers=1))
  assert {round(p.tempo_bpm) for s in ("train", "test") for p in dataset[s]} == {92}


# 6. No result thrown away.


def test_evaluate_prints_the_result_when_it_cannot_write_it(trained):
  _, workdir = trained
  blocker = workdir / "eval_test.json"
  blocker.mkdir()  # where the file should go: writing it fails (as on a read-only folder)
  try:
    proc = _run("musicgen_jax.evaluate", f"--workdir={workdir}", "--split=test")
  finally:
    blocker.rmdir()
  line = _one_error_line(proc)
  assert "eval_test.json" in line and "printed above" in line
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert np.isfinite(result["nll"])


def test_prepare_checks_where_it_writes_before_encoding(midi_dir, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  common = ["--dataset=midi_dir", f"--data_dir={midi_dir}", "--num_workers=1"]
  line = _one_error_line(_run("musicgen_jax.prepare", *common,
                              f"--cache_dir={blocker / 'cache'}"))
  assert "--cache_dir" in line
  line = _one_error_line(_run("musicgen_jax.prepare", *common, f"--cache_dir={tmp_path / 'c'}",
                              f"--stats_json={blocker / 'stats.json'}"))
  assert "--stats_json" in line
  assert not (tmp_path / "c").exists() or not os.listdir(tmp_path / "c")  # nothing encoded


# 7. Failures are one clear line.


@pytest.fixture(scope="module")
def straight_run(midi_dir, tmp_path_factory):
  """A run of many fast steps, checkpointing only at its end, trained without a stop."""
  root = tmp_path_factory.mktemp("straight")
  flags = _train_flags(midi_dir, root / "w", root / "cache", *_LONG_RUN)
  proc = _run("musicgen_jax.train", *flags)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return root / "w", root / "cache"


_LONG_RUN = ("--num_steps=2500", "--checkpoint_every=100000", "--log_every=100")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_step_and_resuming_matches_a_straight_run(
    sig, straight_run, midi_dir, tmp_path):
  """Preemption (SIGTERM) and Ctrl-C (SIGINT): the step in progress is checkpointed, the
  program says where it stopped, and the same command then ends where a straight run ends."""
  straight, cache = straight_run
  flags = _train_flags(midi_dir, tmp_path / "w", cache, *_LONG_RUN)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen([sys.executable, "-m", "musicgen_jax.train", *flags],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=ROOT)
  metrics = tmp_path / "w" / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
    time.sleep(0.05)
  proc.send_signal(sig)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 128 + int(sig), stderr[-2000:]
  assert "Traceback" not in stderr and not stdout.strip()
  lines = [l for l in stderr.splitlines() if l.startswith("stopped:")]
  assert len(lines) == 1, stderr[-2000:]
  step = int(lines[0].split(" at step ")[1].split()[0])
  assert f"{sig.name} at step {step} of 2500: checkpoint {step} written" in lines[0]
  assert "run the same command to resume" in lines[0]
  assert 100 <= step < 2500 and workdir_lib.checkpoint_steps(tmp_path / "w") == [step]
  resumed = _run("musicgen_jax.train", *flags)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resuming from checkpoint {step}" in resumed.stderr
  ours = json.loads(resumed.stdout.strip().splitlines()[-1])
  assert ours["valid_nll"] == json.loads(
      (straight / "metrics.jsonl").read_text().splitlines()[-1])["valid_nll"]
  mine = jax.tree.map(np.asarray, workdir_lib.load_run(str(tmp_path / "w"), 2500).params)
  expected = jax.tree.map(np.asarray, workdir_lib.load_run(str(straight), 2500).params)
  jax.tree.map(np.testing.assert_array_equal, mine, expected)


def _limit_file_size():
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
  resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_full_disk_is_one_line(midi_dir, tmp_path):
  _run("musicgen_jax.prepare", "--dataset=midi_dir", f"--data_dir={midi_dir}",
       f"--cache_dir={tmp_path / 'cache'}", "--num_workers=1")
  # hidden 64: the LSTM's input kernel alone (107 x 256 floats) is 110 kB, past the limit even
  # compressed, so the first checkpoint cannot be written
  proc = _run("musicgen_jax.train", *_train_flags(midi_dir, tmp_path / "w", tmp_path / "cache",
                                                  "--hidden_size=64"),
              preexec_fn=_limit_file_size)
  line = _one_error_line(proc)
  assert "checkpoint" in line or "write" in line
  assert len(proc.stderr.splitlines()) < 40


def test_flag_errors_are_one_line_without_help(trained, midi_dir, tmp_path):
  _, workdir = trained
  proc = _run("musicgen_jax.evaluate", f"--workdir={workdir}", "--eval_batch_size=0")
  assert "eval_batch_size" in _one_error_line(proc)
  proc = _run("musicgen_jax.train", f"--workdir={tmp_path / 'w'}", "extra_argument")
  assert "unexpected arguments" in _one_error_line(proc)
  assert len(proc.stderr.splitlines()) <= 2  # no help text
  proc = _run("musicgen_jax.prepare", "--dataset=midi_dir")
  assert "--data_dir" in _one_error_line(proc)
  assert len(proc.stderr.splitlines()) <= 2


def test_a_diverging_run_never_writes_infinity(midi_dir, tmp_path):
  proc = _run("musicgen_jax.train", *_train_flags(midi_dir, tmp_path / "w", tmp_path / "cache"),
              "--learning_rate=1e6", "--num_steps=30", "--grad_clip=0", "--eval_every=10")
  text = (tmp_path / "w" / "metrics.jsonl").read_text()
  assert "Infinity" not in text and "NaN" not in text
  if proc.returncode != 0:
    assert "non-finite" in _one_error_line(proc)


def test_non_finite_validation_stops_the_run(tmp_path):
  dataset = toy_dataset()
  dataset["valid"][0].frames.flags.writeable = True
  dataset["valid"][0].frames[:, 5] = np.nan  # a broken target: its NLL is not a number
  with pytest.raises(train_lib.NonFiniteError, match="validation NLL .* at step 3"):
    train_lib.train_and_evaluate(toy_config(), str(tmp_path), dataset=dataset)


# 8. A note-on and a note-off at one tick re-strike the note.


def test_same_tick_on_then_off_does_not_cut_the_note():
  """An on and then an off of one pitch at one tick: the off applies first (closing nothing
  here), so the note lasts until its real off, not one grid step."""
  midi = mido.MidiFile(ticks_per_beat=480)
  track = mido.MidiTrack()
  midi.tracks.append(track)
  track.append(mido.Message("note_on", note=64, velocity=80, time=0))
  track.append(mido.Message("note_on", note=60, velocity=80, time=480))  # on, then in file
  track.append(mido.Message("note_off", note=60, velocity=0, time=0))  # order an off
  track.append(mido.Message("note_off", note=64, velocity=0, time=0))
  track.append(mido.Message("note_off", note=60, velocity=0, time=960))  # the real end
  for reader in ("mido", "auto"):
    frames = midi_to_frames(midi, reader=reader)
    np.testing.assert_allclose(frames[:, 106], [1.0, 2.0])  # 60 lasts 2 quarters, not 1/12


# 9. Pitches no piano has.


def test_sampling_keeps_to_the_trained_pitch_range(trained, midi_dir, tmp_path):
  _, workdir = trained
  config = RunConfig.load(str(workdir))
  assert LOWEST_PITCH <= config.model.pitch_low <= config.model.pitch_high < 109
  prime = str(next(midi_dir.iterdir()))
  common = dict(num_frames=40, prime_midi=prime, prime_frames=4, plot=False, num_samples=4,
                temperature=30.0)  # near-uniform: every pitch would sound
  kept = generate.sample_workdir(str(workdir), str(tmp_path / "a"), **common).frames
  pitches = np.flatnonzero(kept[:, 4:, :NUM_NOTES].any(axis=(0, 1))) + LOWEST_PITCH
  assert pitches.min() >= config.model.pitch_low and pitches.max() <= config.model.pitch_high
  free = generate.sample_workdir(str(workdir), str(tmp_path / "b"), all_pitches=True,
                                 **common).frames
  assert free[:, 4:, 109 - LOWEST_PITCH:NUM_NOTES].sum() > 0


# Also: the JSON benchmark loader rejects what is not an integer pitch, naming the piece.


@pytest.mark.parametrize("pitch", ['"60"', "true", "60.5", "null"])
def test_json_loader_rejects_non_integer_pitches(tmp_path, pitch):
  path = tmp_path / "b.json"
  path.write_text('{"train": [[[60, 64]], [[62], [%s]]], "valid": [[[60]]], "test": [[[60]]]}'
                  % pitch)
  with pytest.raises(ValueError, match=r"train/0001.*time step 1"):
    load_dataset(DataConfig(dataset="json", data_path=str(path), cache_dir=str(tmp_path)))


def test_json_loader_requires_every_split(tmp_path):
  path = tmp_path / "b.json"
  path.write_text('{"train": [[[60]]], "test": [[[60]]]}')
  with pytest.raises(ValueError, match="no 'valid' split"):
    load_dataset(DataConfig(dataset="json", data_path=str(path), cache_dir=str(tmp_path)))

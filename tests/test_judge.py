"""The classifier two-sample test: chance on one source, near 1 on two, features named."""

import json

import numpy as np
import pytest

from musicgen_jax import encoding, judge, midi

pytest.importorskip("sklearn")

FAST = dict(length=32, folds=3, seeds=(0,))


def pieces(seed, count, notes, durations, length=96):
  """Random pieces: `notes` (low, high) notes per frame from pitches 40..70."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    frames = np.zeros((length, encoding.FRAME_DIM), np.float32)
    for t in range(length):
      k = rng.integers(notes[0], notes[1] + 1)
      frames[t, rng.choice(np.arange(19, 50), size=k, replace=False)] = 1.0
      frames[t, encoding.DURATION_INDEX] = rng.choice(durations)
    out.append(frames)
  return out


def test_features_read_what_they_name():
  frames = np.zeros((4, encoding.FRAME_DIM), np.float32)
  frames[0, [39, 43]] = 1  # C4 + E4
  frames[1, 46] = 1        # G4
  frames[3, 51] = 1        # C5 (frame 2 is a rest)
  frames[:, encoding.DURATION_INDEX] = [0.5, 0.5, 1.0, 1.0]
  f = dict(zip(judge.FEATURE_NAMES, judge.excerpt_features(frames)))
  assert f["pitch_class_C"] == pytest.approx(0.5) and f["pitch_class_G"] == pytest.approx(0.25)
  assert f["interval_+3"] == pytest.approx(0.5) and f["interval_+5"] == pytest.approx(0.5)
  assert f["polyphony_0"] == pytest.approx(0.25) and f["polyphony_2"] == pytest.approx(0.25)
  assert f["pitch_range"] == 12 and f["ioi_6"] == pytest.approx(2 / 3)
  assert f["ioi_12"] == pytest.approx(1 / 3)
  assert f["onset_position_0"] == pytest.approx(2 / 3)  # steps 0 and 24 (the rest at 12)
  assert f["onset_position_6"] == pytest.approx(1 / 3)  # step 6, half a beat
  assert len(judge.excerpt_features(frames)) == len(judge.FEATURE_NAMES)


def test_one_source_is_chance_two_sources_are_told_apart():
  real = pieces(0, 20, (1, 3), [0.25, 0.5])
  same = judge.two_sample_test(pieces(1, 20, (1, 3), [0.25, 0.5]), real, **FAST)
  far = judge.two_sample_test(pieces(2, 20, (3, 5), [0.25, 0.5]), real, **FAST)
  assert abs(same["balanced_accuracy"] - 0.5) < 0.15
  assert far["balanced_accuracy"] > 0.95
  assert far["giveaways"][0]["group"] in ("polyphony", "pitch_range", "pitch_spread")
  assert same["excerpts_a"] == same["excerpts_b"] == 60  # 20 pieces x 3 excerpts of 32
  assert len(same["per_seed"]) == 1 and same["spread"] >= 0


def test_judge_reports_floor_and_rejects_too_little_music():
  real = pieces(0, 10, (1, 3), [0.25, 0.5])
  result = judge.judge(pieces(2, 10, (3, 5), [0.5]), real, pieces(1, 10, (1, 3), [0.25, 0.5]),
                       **FAST)
  assert result["above_floor"] == pytest.approx(result["generated"]["balanced_accuracy"]
                                                - result["floor"]["balanced_accuracy"])
  assert result["above_floor"] > 0.3
  assert "floor: balanced accuracy" in judge.format_result(result)
  with pytest.raises(ValueError, match="at least 3 excerpts of 32 frames"):
    judge.two_sample_test([real[0][:64]], real, **FAST)  # 2 excerpts


def test_program_compares_two_folders(tmp_path, capsys):
  from absl import flags  # pylint: disable=import-outside-toplevel
  for name, group in (("a", pieces(3, 6, (1, 2), [0.5])), ("b", pieces(4, 6, (4, 6), [0.5]))):
    (tmp_path / name).mkdir()
    for i, frames in enumerate(group):
      onsets, ends, pitches = encoding.frames_to_notes(frames)
      midi.write_notes(onsets * 40, ends * 40, pitches).save(str(tmp_path / name / f"{i}.mid"))
  fv = flags.FlagValues()
  judge.define_flags(fv)
  fv([
      "judge", f"--generated={tmp_path / 'a'}", f"--real={tmp_path / 'b'}", "--length=32",
      "--folds=3", "--seeds=0", f"--output={tmp_path / 'r.json'}"])
  judge.main(fv, [])
  assert "generated: balanced accuracy" in capsys.readouterr().out
  assert json.loads((tmp_path / "r.json").read_text())["generated"]["balanced_accuracy"] > 0.9
  with pytest.raises(FileNotFoundError, match="no .mid/.midi files"):
    judge.read_midi_folder(str(tmp_path / "missing"))
  # the evaluator reports it beside the overlap statistic, reading the samples as the run does
  from musicgen_jax import evaluate  # pylint: disable=import-outside-toplevel
  from musicgen_jax.data import STUDY_FRAME, DataConfig, Piece  # pylint: disable=import-outside-toplevel
  real = [Piece(str(i), f) for i, f in enumerate(pieces(4, 6, (4, 6), [0.5]))]
  report = evaluate.judge_midi_dir(str(tmp_path / "a"), DataConfig(**STUDY_FRAME), real)
  assert report["generated"]["balanced_accuracy"] > 0.9 and report["generated"]["length"] == 96
  assert "at least 5 excerpts" in evaluate.judge_midi_dir(
      str(tmp_path / "a"), DataConfig(**STUDY_FRAME), real[:1])["error"]

"""Music statistics on hand-built pieces with known answers, and the overlap measure."""

import math

import numpy as np
import pytest

from musicgen_jax import music_stats
from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, LOWEST_PITCH, frames_to_midi


def piece(*frames):
  """frames: (pitches, duration in quarters) pairs -> float32[T, 107]."""
  out = np.zeros((len(frames), FRAME_DIM), np.float32)
  for t, (pitches, duration) in enumerate(frames):
    for p in pitches:
      out[t, p - LOWEST_PITCH] = 1.0
    out[t, DURATION_INDEX] = duration
  return out


C_TRIAD = (60, 64, 67)
CLUSTER = tuple(range(48, 60))  # all twelve pitch classes, 12 notes
# 5 frames: a triad twice (a repeat), a rest, one note, a 12-note cluster.
HAND = piece((C_TRIAD, 1.0), (C_TRIAD, 1.0), ((), 0.5), ((62,), 0.25), (CLUSTER, 2.0))


def test_features_of_a_hand_built_piece():
  f = music_stats.piece_features(HAND, steps_per_quarter=4, max_duration_steps=8)
  assert f["pitch_classes_used"] == 12
  assert f["pitch_range"] == 67 - 48
  assert f["mean_polyphony"] == pytest.approx(19 / 4)  # 19 notes in 4 non-empty frames
  assert f["rest_rate"] == pytest.approx(1 / 5)
  assert f["repeated_frame_rate"] == pytest.approx(1 / 4)
  assert f["dense_frame_rate"] == pytest.approx(1 / 5)
  assert f["mean_duration"] == pytest.approx((1 + 1 + 0.5 + 0.25 + 2) / 5)
  # Durations 1, 1, 0.5, 0.25, 2 quarters = 4, 4, 2, 1, 8 steps of a quarter / 4.
  assert f["duration_histogram"] == pytest.approx([0.2, 0.2, 0, 0.4, 0, 0, 0, 0.2])
  # Pitch classes: C 3, E 3, G 3, D 2, the other eight once: 19 notes.
  counts = np.array([3, 1, 2, 1, 3, 1, 1, 3, 1, 1, 1, 1])
  assert f["pitch_class_histogram"] == pytest.approx(counts / 19)
  p = counts / 19
  assert f["pitch_class_entropy"] == pytest.approx(-(p * np.log2(p)).sum())
  # Best scale holds C, D, E, G (C, F or G major): 3+2+3+3 plus three single notes.
  assert f["scale_consistency"] == pytest.approx(14 / 19)


def test_entropy_and_scale_extremes():
  one = music_stats.piece_features(piece(((60,), 1.0), ((72,), 1.0)))
  assert one["pitch_class_entropy"] == 0.0 and one["pitch_classes_used"] == 1
  assert one["scale_consistency"] == 1.0 and one["pitch_range"] == 12
  chromatic = music_stats.piece_features(piece(*[((60 + i,), 0.5) for i in range(12)]))
  assert chromatic["pitch_class_entropy"] == pytest.approx(math.log2(12))
  assert chromatic["scale_consistency"] == pytest.approx(7 / 12)
  a_harmonic_minor = (57, 59, 60, 62, 64, 65, 68)  # G sharp: in no major scale with the rest
  minor = music_stats.piece_features(piece(*[((p,), 1.0) for p in a_harmonic_minor]))
  assert minor["scale_consistency"] == 1.0
  assert music_stats.SCALES.shape == (24, 12) and (music_stats.SCALES.sum(axis=1) == 7).all()
  assert len({row.tobytes() for row in music_stats.SCALES}) == 24


def test_empty_piece_features_are_nan_not_errors():
  rests = music_stats.piece_features(piece(((), 1.0), ((), 1.0)))
  assert rests["rest_rate"] == 1.0 and rests["mean_polyphony"] == 0.0
  assert math.isnan(rests["pitch_range"]) and math.isnan(rests["pitch_class_entropy"])
  assert rests["repeated_frame_rate"] == 1.0


def test_set_statistics_pools_frames():
  other = piece(((60,), 1.0), ((), 1.0))
  stats = music_stats.set_statistics([HAND, other], steps_per_quarter=4, max_duration_steps=8)
  assert stats["num_pieces"] == 2 and stats["num_frames"] == 7 and stats["num_notes"] == 20
  assert stats["pooled"]["rest_rate"] == pytest.approx(2 / 7)
  assert stats["pooled"]["mean_polyphony"] == pytest.approx(20 / 5)
  assert stats["per_piece_mean"]["rest_rate"] == pytest.approx((0.2 + 0.5) / 2)


def test_overlap_area_extremes():
  rng = np.random.default_rng(0)
  x = rng.normal(size=400)
  assert music_stats.overlap_area(x, x) == pytest.approx(1.0, abs=1e-3)
  assert music_stats.overlap_area(x, x + 100.0) < 1e-3
  half = music_stats.overlap_area(rng.normal(size=4000), rng.normal(1.0, 1.0, size=4000))
  # Two unit Gaussians one sigma apart overlap by 2 * Phi(-1/2) ~ 0.617.
  assert half == pytest.approx(0.617, abs=0.04)
  zeros = np.zeros(10)
  assert music_stats.overlap_area(zeros, zeros) == pytest.approx(1.0, abs=1e-3)
  assert music_stats.overlap_area(zeros, zeros + 1.0) < 1e-3


def random_pieces(seed, count, notes_per_frame, length=48):
  rng = np.random.default_rng(seed)
  pieces = []
  for _ in range(count):
    frames = np.zeros((length, FRAME_DIM), np.float32)
    for t in range(length):
      k = rng.integers(notes_per_frame[0], notes_per_frame[1] + 1)
      frames[t, rng.choice(np.arange(39, 64), size=k, replace=False)] = 1.0
      frames[t, DURATION_INDEX] = rng.choice([0.25, 0.5, 1.0])
    pieces.append(frames)
  return pieces


def test_compare_sets_same_source_overlaps_far_source_does_not():
  real = random_pieces(0, 30, (0, 4))
  same = music_stats.compare_sets(random_pieces(1, 30, (0, 4)), real)
  far = music_stats.compare_sets(random_pieces(2, 30, (11, 14)), real)
  identical = music_stats.compare_sets(real, real)
  for name in ("mean_polyphony", "rest_rate", "dense_frame_rate"):
    assert same["features"][name]["overlap"] > 0.7, name
    assert identical["features"][name]["overlap"] > 0.85, name
    assert far["features"][name]["overlap"] < 0.05, name
  assert identical["mean_overlap"] > 0.85 and far["mean_overlap"] < same["mean_overlap"]
  assert identical["features"]["rest_rate"]["mean_difference"] == 0.0
  assert far["features"]["mean_polyphony"]["mean_difference"] > 8
  assert far["features"]["dense_frame_rate"]["mean_generated"] > 0.5
  assert "pooled_l1" in far["features"]["duration_histogram"]
  assert "| mean_polyphony |" in music_stats.format_table(far)


def test_segments_and_midi_folder_round_trip(tmp_path):
  assert [len(s) for s in music_stats.segments([np.zeros((10, FRAME_DIM))], 4)] == [4, 4]
  real = random_pieces(0, 4, (1, 3), length=40)
  for i, frames in enumerate(random_pieces(5, 3, (1, 3), length=20)):
    frames_to_midi(frames).save(str(tmp_path / f"sample_{i:03d}.mid"))
  (tmp_path / "notes.txt").write_text("not midi")
  report = music_stats.compare_midi_dir(str(tmp_path), real)
  assert report["num_midi_files"] == 3 and report["segment_frames"] == 20
  assert report["real"]["num_pieces"] == 8  # four 40-frame pieces in 20-frame excerpts
  assert report["generated"]["num_frames"] == 60
  with pytest.raises(FileNotFoundError, match="no .mid"):
    music_stats.compare_midi_dir(str(tmp_path / "missing"), real)


def test_onset_positions_and_their_distance():
  # onsets at steps 0, 4, 6 (a rest frame starts at 6: not counted), 8, 9 on a grid of 4
  frames = piece(((60,), 1.0), ((62,), 0.5), ((), 0.5), ((64,), 0.25), ((65,), 1.0))
  np.testing.assert_allclose(music_stats.onset_positions([frames], 4), [0.75, 0.25, 0, 0])
  np.testing.assert_allclose(music_stats.onset_positions([frames], 4, skip=3), [0.5, 0.5, 0, 0])
  # With metre columns their bar position places them (here 14 steps into the first bar)
  from musicgen_jax import encoding  # pylint: disable=g-import-not-at-top
  pickup = encoding.add_metre(frames, "4/4", 4, start_step=14)
  np.testing.assert_allclose(music_stats.onset_positions([pickup], 4), [0, 0, 0.75, 0.25])
  assert music_stats.total_variation([0.75, 0.25], [0.75, 0.25]) == 0
  assert music_stats.total_variation([1, 0], [0, 1]) == 1
  assert music_stats.total_variation([0.75, 0.25, 0], [0.5, 0.25, 0.25]) == pytest.approx(0.25)


def test_sounding_at_onsets_counts_held_notes():
  from musicgen_jax.encoding import FrameLayout  # pylint: disable=g-import-not-at-top
  # a bass note held for two quarters under two melody notes one quarter each
  cut = piece(((48, 60), 1.0), ((62,), 1.0))
  assert music_stats.sounding_at_onsets([cut], 4) == pytest.approx(1.5)  # (2 + 1) / 2
  layout = FrameLayout(lengths=True)
  held = np.zeros((2, layout.width), np.float32)
  held[:, :FRAME_DIM] = cut
  held[0, layout.length_columns.start + 48 - LOWEST_PITCH] = 2.0
  held[0, layout.length_columns.start + 60 - LOWEST_PITCH] = 1.0
  held[1, layout.length_columns.start + 62 - LOWEST_PITCH] = 1.0
  assert music_stats.sounding_at_onsets([held], 4) == pytest.approx(2.0)  # (2 + 2) / 2
  assert music_stats.sounding_at_onsets([held], 4, skip=1) == pytest.approx(2.0)

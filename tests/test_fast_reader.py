"""The fast MIDI reader (symusic) against the reference (mido): same frames, same errors."""

import pathlib
import random

import numpy as np
import pytest

from midi_builders import build_midi
from musicgen_jax import MidiError, encode_midi, midi
from test_bad_input import REAL_FILES, SHARED, mutate

pytestmark = pytest.mark.skipif(not midi.fast_reader_available(),
                                reason="symusic (the fast reader) is not installed")
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _encode(data, reader):
  try:
    frames, stats = encode_midi(data, reader=reader, with_velocity=True)
    return frames, (stats.tempo_bpm, stats.time_signature, stats.dropped_drums)
  except MidiError as e:
    return None, str(e)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_identical_frames_on_every_shared_midi_file():
  files = sorted(SHARED_DATA.rglob("*.mid")) + sorted(SHARED_DATA.rglob("*.midi"))
  assert len(files) >= 80
  for path in files:
    data = path.read_bytes()
    (fast, fast_meta), (slow, slow_meta) = _encode(data, "symusic"), _encode(data, "mido")
    assert fast is not None and slow is not None, path.name
    np.testing.assert_array_equal(fast, slow, err_msg=path.name)
    assert fast_meta == slow_meta, path.name


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/piano-midi is absent")
def test_mutated_files_raise_midierror_alike():
  """Where the fast reader raises, mido raises the same error (the fast reader hands every
  file it cannot parse to mido); the only difference allowed is the documented one: files
  whose non-note events are corrupt, which mido refuses and symusic reads."""
  originals = [(SHARED / f).read_bytes() for f in REAL_FILES]
  rng = random.Random(7)
  lenient = 0
  for i in range(600):
    data = mutate(originals[i % len(originals)], rng)
    fast, fast_meta = _encode(data, "symusic")
    slow, slow_meta = _encode(data, "mido")
    if fast is None:
      assert slow is None and fast_meta == slow_meta
    elif slow is None:
      lenient += 1
      assert fast.ndim == 2 and np.isfinite(fast).all()
  assert lenient < 0.06 * 600


def test_well_formed_edge_cases_agree():
  import io  # pylint: disable=g-import-not-at-top
  import mido  # pylint: disable=g-import-not-at-top
  m = mido.Message
  track = [m("note_on", note=60, velocity=80, time=0), m("note_on", note=60, velocity=90, time=240),
           m("note_off", note=60, velocity=0, time=240), m("note_off", note=60, velocity=0,
                                                            time=480),
           m("note_on", note=36, velocity=80, time=0, channel=9),
           m("note_off", note=36, velocity=0, time=480, channel=9),
           m("note_on", note=64, velocity=70, time=0), m("note_on", note=64, velocity=0, time=960)]
  file = mido.MidiFile(ticks_per_beat=96)
  file.tracks.append(mido.MidiTrack(track))
  buffer = io.BytesIO()
  file.save(file=buffer)
  fast, slow = _encode(buffer.getvalue(), "symusic"), _encode(buffer.getvalue(), "mido")
  np.testing.assert_array_equal(fast[0], slow[0])
  assert fast[1] == slow[1] and fast[1][2] == 1  # one drum note dropped by both


def _frames_and_stats(data, reader, include_drums=False):
  return encode_midi(data, reader=reader, with_velocity=True, include_drums=include_drums)


# Files real-world MIDI is full of; symusic alone would drop or re-pair notes in each.
MALFORMED = {
    "never closed": [[(0, "on", 0, 60, 80), (96, "on", 0, 62, 80), (192, "off", 0, 62, 0),
                      (400, "off", 0, 64, 0)]],
    "re-struck while open, one off": [[(0, "on", 0, 60, 80), (48, "on", 0, 60, 90),
                                       (96, "off", 0, 60, 0), (300, "on", 0, 62, 70),
                                       (360, "off", 0, 62, 0)]],
    "re-struck while open, two offs": [[(0, "on", 0, 60, 80), (48, "on", 0, 60, 90),
                                        (96, "off", 0, 60, 0), (192, "off", 0, 60, 0)]],
    "note-offs without a note-on": [[(0, "off", 0, 60, 0), (0, "on", 0, 62, 80),
                                     (96, "off", 0, 62, 0), (150, "off", 0, 62, 0)]],
    "velocity-0 note-ons": [[(0, "on", 0, 60, 80), (96, "on", 0, 60, 0), (96, "on", 0, 64, 70),
                             (200, "on", 0, 64, 0)]],
    "on and off at one tick": [[(0, "on", 0, 60, 80), (0, "off", 0, 60, 0), (96, "on", 0, 62, 80),
                                (192, "off", 0, 62, 0), (288, "off", 0, 60, 0)]],
    "closed by another track": [[(0, "on", 0, 60, 80), (192, "off", 0, 60, 0)],
                                [(48, "off", 0, 60, 0)]],
    "one pitch in two tracks": [[(0, "on", 0, 60, 80), (150, "off", 0, 60, 0)],
                                [(50, "on", 0, 60, 70), (100, "off", 0, 60, 0)]],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_give_the_specifications_frames(case):
  data = build_midi(MALFORMED[case], ticks_per_beat=96)
  (fast, fast_stats), (slow, slow_stats) = (_frames_and_stats(data, "symusic"),
                                            _frames_and_stats(data, "mido"))
  np.testing.assert_array_equal(fast, slow)
  assert fast_stats == slow_stats
  expected_unclosed = {"never closed": 1, "re-struck while open, one off": 1}.get(case, 0)
  assert slow_stats.unclosed_notes == expected_unclosed


def test_unclosed_notes_are_counted_not_dropped():
  data = build_midi(MALFORMED["never closed"], ticks_per_beat=96)
  notes, _ = midi.read_notes(data, reader="symusic")
  assert sorted(zip(notes.onsets.tolist(), notes.ends.tolist())) == [(0, 400), (96, 192)]
  assert notes.num_unclosed == 1 and notes.end_tick == 400


def test_the_fast_path_is_taken_where_it_is_exact():
  clean = build_midi([[(0, "on", 0, 60, 80), (96, "off", 0, 60, 0), (48, "on", 0, 62, 80),
                       (96, "on", 0, 62, 0)]], ticks_per_beat=96)
  assert midi._read_notes_symusic(clean, "x", False) is not None
  for case, tracks in MALFORMED.items():
    if case not in ("re-struck while open, two offs", "velocity-0 note-ons",
                    "one pitch in two tracks"):  # re-paired as mido pairs one channel
      assert midi._read_notes_symusic(build_midi(tracks, ticks_per_beat=96), "x", False) is None, case


def _random_file(rng):
  """Mostly well-formed tracks (so both paths run), with a defect now and then."""
  tracks = []
  channels = rng.choice([[0, 0, 1, 9], [0, 0, 9]])  # several melodic channels, or one
  for _ in range(rng.choice([1, 2, 3])):
    events = []
    for _ in range(rng.randint(1, 30)):
      tick, channel, pitch = rng.randint(0, 40) * 12, rng.choice(channels), rng.choice(
          [60, 62, 64, 65, 67])
      events += [(tick, "on", channel, pitch, rng.randint(1, 127)),
                 (tick + rng.choice([1, 6, 12, 24, 48, 96, 200]), "off", channel, pitch, 0)]
    defect = rng.random()
    if defect < 0.1:
      events.append((rng.randint(0, 500), "on", 0, 60, 90))
    elif defect < 0.2:
      events.append((rng.randint(0, 500), "off", 0, 61, 0))
    elif defect < 0.3:
      tick = rng.randint(0, 500)
      events += [(tick, "on", 0, 70, 80), (tick, "off", 0, 70, 0)]
    tracks.append(events)
  return build_midi(tracks, ticks_per_beat=rng.choice([96, 480]))


def test_random_files_read_alike_on_both_paths():
  rng = random.Random(11)
  fast_path = 0
  for _ in range(300):
    data = _random_file(rng)
    fast_path += midi._read_notes_symusic(data, "x", False) is not None
    for drums in (False, True):
      (fast, fast_stats), (slow, slow_stats) = (_frames_and_stats(data, "symusic", drums),
                                                _frames_and_stats(data, "mido", drums))
      np.testing.assert_array_equal(fast, slow)
      assert fast_stats == slow_stats
  assert 20 < fast_path < 280  # both paths were exercised

"""The fast MIDI reader (symusic) against the reference (mido): same frames, same errors."""

import pathlib
import random

import numpy as np
import pytest

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

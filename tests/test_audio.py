"""Audio: a real SoundFont synthesizer renders MIDI with its tempo, velocities and program."""

import os
import subprocess
import sys

import mido
import numpy as np
import pytest

from musicgen_jax import audio, frames_to_midi
from toy import toy_frames

pytestmark = pytest.mark.skipif(not audio.available(), reason="the audio extra is not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _midi(tmp_path, name, *, tempo_bpm=120.0, velocity=80, program=None):
  midi = frames_to_midi(toy_frames(0, 24), tempo_bpm=tempo_bpm, velocity=velocity)
  if program is not None:
    for message in midi.tracks[0]:
      if message.type == "program_change":
        message.program = program
  path = str(tmp_path / name)
  midi.save(path)
  return path


def _read(path):
  import soundfile  # pylint: disable=g-import-not-at-top
  data, rate = soundfile.read(path)
  return data, rate


def test_rendered_audio_is_not_silent_has_the_midis_length_and_does_not_clip(tmp_path):
  path = _midi(tmp_path, "a.mid", tempo_bpm=92)
  out = audio.render_midi(path, str(tmp_path / "a.ogg"))
  data, rate = _read(out)
  assert rate == audio.SAMPLE_RATE and data.shape[1] == 2
  assert np.sqrt(np.mean(data ** 2)) > 0.005  # not silent
  assert abs(data.shape[0] / rate - mido.MidiFile(path).length) < 1.0
  assert np.abs(data).max() < 0.999


def test_compression_level_trades_size_for_quality_and_keeps_the_length(tmp_path):
  path = _midi(tmp_path, "a.mid")
  best = audio.render_midi(path, str(tmp_path / "best.ogg"), compression_level=0.0)
  small = audio.render_midi(path, str(tmp_path / "small.ogg"), compression_level=1.0)
  assert os.path.getsize(small) < 0.8 * os.path.getsize(best)
  (a, _), (b, _) = _read(best), _read(small)
  assert abs(len(a) - len(b)) < audio.SAMPLE_RATE // 10 and np.sqrt(np.mean(b ** 2)) > 0.005


def test_tempo_velocity_and_program_are_respected(tmp_path):
  slow = audio.render_audio(_midi(tmp_path, "slow.mid", tempo_bpm=60))
  fast = audio.render_audio(_midi(tmp_path, "fast.mid", tempo_bpm=120))
  assert slow.shape[0] / fast.shape[0] == pytest.approx(2.0, rel=0.1)
  quiet = audio.render_audio(_midi(tmp_path, "quiet.mid", velocity=25))
  loud = audio.render_audio(_midi(tmp_path, "loud.mid", velocity=110))
  rms = lambda a: float(np.sqrt(np.mean(a ** 2)))
  assert rms(loud) > 2 * rms(quiet)
  piano = audio.render_audio(_midi(tmp_path, "piano.mid", program=0))
  organ = audio.render_audio(_midi(tmp_path, "organ.mid", program=19))
  n = min(len(piano), len(organ))
  assert np.abs(piano[:n] - organ[:n]).mean() > 0.01  # the program decides the instrument


def test_a_missing_soundfont_says_what_to_do(tmp_path):
  with pytest.raises(audio.AudioError, match="--soundfont=.* is not a file"):
    audio.find_soundfont(str(tmp_path / "none.sf2"))


def test_render_program(tmp_path):
  path = _midi(tmp_path, "b.mid")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "musicgen_jax.render", path,
                         str(tmp_path / "b.wav")], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert _read(str(tmp_path / "b.wav"))[0].shape[0] > 0
  proc = subprocess.run([sys.executable, "-m", "musicgen_jax.render"], capture_output=True,
                        text=True, env=env, cwd=ROOT, timeout=120)
  assert proc.returncode == 2 and proc.stderr.startswith("error: give a MIDI file")

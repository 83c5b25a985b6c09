"""MIDI to audio with a SoundFont synthesizer (the `audio` extra: symusic and soundfile).

    render_midi("sample_000.mid", "sample_000.ogg")

symusic's C++ synthesizer plays the file (tempo, programs) through a General MIDI
SoundFont; soundfile writes OGG (Vorbis), WAV or FLAC, chosen by the extension. The
synthesizer plays every note at one loudness whatever its velocity, so the notes are
rendered in velocity layers, each scaled by the General MIDI velocity curve (amplitude
(velocity / 127)^2, i.e. 40 log10(velocity / 127) dB) and mixed. The
SoundFont is `soundfont=PATH`, else $MUSICGEN_SOUNDFONT, else one found installed (the
`audio` extra brings pretty_midi's TimGM6mb.sf2), else the error says what to install.
Nothing is downloaded.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os

import numpy as np

SOUNDFONT_ENV = "MUSICGEN_SOUNDFONT"
SAMPLE_RATE = 22050  # Hz: small files, ample for piano
PEAK = 0.95  # rendered audio is scaled down to this peak when louder: it never clips
VELOCITY_LAYERS = 8  # velocity ranges rendered apart and mixed with their gains
WRITE_BLOCK = 1 << 16  # frames per write
MAKEUP_GAIN = 2.0  # +6 dB after the velocity curve: typical velocities land near -6 dBFS
FORMATS = {".ogg": ("OGG", "VORBIS"), ".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}
SYSTEM_SOUNDFONTS = ("/usr/share/sounds/sf2/*.sf2", "/usr/share/soundfonts/*.sf2",
                     "/usr/share/sounds/sf3/*.sf3", "/usr/share/soundfonts/*.sf3")
INSTALL_HINT = ("pip install 'musicgen-jax[audio]' (symusic, soundfile, and pretty_midi's "
                "General MIDI SoundFont)")


class AudioError(RuntimeError):
  """Rendering is not possible here; the message says what to install or pass."""


def available() -> bool:
  """True when the audio extra (symusic and soundfile) is installed."""
  return all(importlib.util.find_spec(m) is not None for m in ("symusic", "soundfile"))


def find_soundfont(path: str | None = None) -> str:
  """The SoundFont to render with: `path`, $MUSICGEN_SOUNDFONT, or an installed one."""
  for candidate, what in ((path, "--soundfont"), (os.environ.get(SOUNDFONT_ENV),
                                                  f"${SOUNDFONT_ENV}")):
    if candidate:
      if not os.path.isfile(candidate):
        raise AudioError(f"{what}={candidate} is not a file; give a .sf2 or .sf3 SoundFont")
      return candidate
  spec = importlib.util.find_spec("pretty_midi")
  if spec is not None and spec.origin:
    bundled = os.path.join(os.path.dirname(spec.origin), "TimGM6mb.sf2")
    if os.path.isfile(bundled):
      return bundled
  for pattern in SYSTEM_SOUNDFONTS:
    found = sorted(glob.glob(pattern))
    if found:
      return found[0]
  raise AudioError(f"no SoundFont found: {INSTALL_HINT}, or pass --soundfont=PATH "
                   f"(or set ${SOUNDFONT_ENV})")


def _format(out_path: str) -> tuple[str, str]:
  extension = os.path.splitext(out_path)[1].lower()
  if extension not in FORMATS:
    raise ValueError(f"cannot write {out_path}: audio goes to .ogg, .wav or .flac")
  return FORMATS[extension]


def velocity_gain(velocity) -> np.ndarray:
  """The General MIDI velocity curve: amplitude (velocity / 127)^2."""
  return (np.clip(np.asarray(velocity, np.float64), 1, 127) / 127.0) ** 2


def _layers(score) -> list[tuple[object, float]]:
  """(score holding one velocity range's notes, the gain of its mean velocity)."""
  velocities = np.concatenate([track.notes.numpy()["velocity"] for track in score.tracks
                               if len(track.notes)] or [np.zeros(0)])
  if not velocities.size or velocities.min() == velocities.max():
    return [(score, float(velocity_gain(velocities[0] if velocities.size else 127)))]
  edges = np.linspace(velocities.min(), velocities.max() + 1, VELOCITY_LAYERS + 1)
  layers = []
  for low, high in zip(edges[:-1], edges[1:]):
    inside = velocities[(velocities >= low) & (velocities < high)]
    if inside.size:
      layer = score.copy()
      for track in layer.tracks:
        track.notes.filter(lambda n, lo=float(low), hi=float(high): bool(lo <= n.velocity < hi),
                           inplace=True)
      layers.append((layer, float(velocity_gain(inside.mean()))))
  return layers


@functools.lru_cache(maxsize=4)
def _synthesizer(soundfont: str, sample_rate: int):
  """A SoundFont is read once per process, not once per rendered file."""
  import symusic  # pylint: disable=g-import-not-at-top
  return symusic.Synthesizer(soundfont, sample_rate, 0)


def render_audio(midi_path: str, *, soundfont: str | None = None,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """float32[samples, 2]: the MIDI file played through the SoundFont, peak <= PEAK."""
  if not available():
    raise AudioError(f"audio needs symusic and soundfile: {INSTALL_HINT}")
  import symusic  # pylint: disable=g-import-not-at-top
  soundfont = find_soundfont(soundfont)
  try:
    score = symusic.Score(midi_path)
  except Exception as e:  # symusic raises its own types for unreadable files
    raise ValueError(f"{midi_path}: cannot read it as MIDI ({e})") from e
  synth = _synthesizer(soundfont, sample_rate)
  audio = np.zeros((0, 2), np.float32)
  for layer, gain in _layers(score):  # mixed as rendered: one layer in memory at a time
    part = np.asarray(synth.render(layer, stereo=True), np.float32).T
    if len(part) > len(audio):
      audio = np.concatenate([audio, np.zeros((len(part) - len(audio), 2), np.float32)])
    audio[:len(part)] += MAKEUP_GAIN * gain * part
  peak = float(np.abs(audio).max()) if audio.size else 0.0
  if peak > PEAK:
    audio *= PEAK / peak
  return audio


def render_midi(midi_path: str, out_path: str, *, soundfont: str | None = None,
                sample_rate: int = SAMPLE_RATE, compression_level: float | None = None) -> str:
  """Renders a MIDI file to out_path (.ogg, .wav or .flac); returns out_path.

  compression_level: 0 (best quality) .. 1 (smallest file) for OGG and FLAC; None keeps
  libsndfile's default."""
  container, subtype = _format(out_path)
  audio = np.ascontiguousarray(render_audio(midi_path, soundfont=soundfont,
                                            sample_rate=sample_rate))
  import soundfile  # pylint: disable=g-import-not-at-top
  # In blocks: libsndfile's Vorbis encoder can crash on one very long write.
  level = {} if compression_level is None else {"compression_level": compression_level}
  with soundfile.SoundFile(out_path, "w", sample_rate, 2, subtype=subtype,
                           format=container, **level) as f:
    for start in range(0, len(audio), WRITE_BLOCK):
      f.write(audio[start:start + WRITE_BLOCK])
  return out_path

r"""What the frame keeps: real piano music decoded through each encoding, to hear and see.

    python -m experiments.codec_page --data_dir=../shared/data/piano-midi \
        --report_dir=experiments/results/codec

The opening --quarters quarter notes of a few pieces, encoded three ways and decoded back
to MIDI: the ioi frame (every note cut at the next onset: what the study and the runs so far
train on), note lengths (every note its own length), and note lengths with the sustain
pedal applied (the file as a pianist hears it). Each version is written as MIDI, a piano
roll and audio, with the share of the sounding note-time it keeps (against the last), on
one page (index.html). Takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

from experiments import runner
from musicgen_jax import audio, encoding, music_stats, pages, plotting

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.path.join(runner.REPO, "..", "shared", "data", "piano-midi"),
                    "Folder of the pieces.")
flags.DEFINE_list("pieces", ["chpn-p4.mid", "chpn_op53.mid", "mz_331_1.mid"],
                  "Files of --data_dir to decode.")
flags.DEFINE_integer("quarters", 32, "Length of each excerpt in quarter notes.")
flags.DEFINE_string("report_dir", os.path.join(runner.REPO, "experiments", "results", "codec"),
                    "Where the page and its files go.")
SPQ = 12
VERSIONS = (("ioi", "the ioi frame: each note cut at the next onset",
             dict(note_lengths=False, sustain_pedal="ignore")),
            ("lengths", "note lengths: each note as long as written",
             dict(note_lengths=True, sustain_pedal="ignore")),
            ("lengths_pedal", "note lengths and the sustain pedal: as a pianist hears it",
             dict(note_lengths=True, sustain_pedal="apply")))


def _excerpt(frames: np.ndarray, quarters: int) -> np.ndarray:
  starts = encoding.frame_steps(frames, SPQ)[:-1]
  return frames[starts < quarters * SPQ]


def piece_entries(path: str, out: str) -> list[pages.Entry]:
  name = os.path.splitext(os.path.basename(path))[0]
  decoded, entries = {}, []
  for version, _, settings in VERSIONS:
    frames, stats = encoding.encode_midi(path, steps_per_quarter=SPQ, with_velocity=True,
                                         **settings)
    decoded[version] = (_excerpt(frames, FLAGS.quarters), stats)
  until = FLAGS.quarters * SPQ
  sounding = lambda frames: music_stats.sounding_steps(
      *encoding.frames_to_notes(frames, steps_per_quarter=SPQ), until=until)
  heard = sounding(decoded["lengths_pedal"][0])
  for version, text, _ in VERSIONS:
    frames, stats = decoded[version]
    stem = os.path.join(out, f"{name}_{version}")
    encoding.frames_to_midi(frames, tempo_bpm=stats.tempo_bpm, steps_per_quarter=SPQ,
                            time_signature=stats.time_signature).save(stem + ".mid")
    plotting.piano_roll(frames, stem + ".png", title=f"{name}: {version}", steps_per_quarter=SPQ)
    sounds = []
    if audio.available():
      audio.render_midi(stem + ".mid", stem + ".ogg", compression_level=pages.PAGE_COMPRESSION)
      sounds = [f"{name}_{version}.ogg"]
    kept = sounding(frames) / heard
    entries.append(pages.Entry(f"{name}: {version}", text=text, roll=f"{name}_{version}.png",
                               audio=sounds,
                               numbers={"sounding note-time kept": f"{100 * kept:.0f}%",
                                        "frames": len(frames)}))
  return entries


def main(argv):
  del argv
  out = FLAGS.report_dir
  os.makedirs(out, exist_ok=True)
  sections = [(piece, piece_entries(os.path.join(FLAGS.data_dir, piece), out))
              for piece in FLAGS.pieces]
  intro = (f"The first {FLAGS.quarters} quarter notes of each piece, encoded and decoded "
           "three ways (piano-midi.de, Bernd Krueger, CC BY-SA 3.0 DE). The share of "
           "sounding note-time is against the last version, the file as a pianist hears it. "
           "Made by python -m experiments.codec_page.")
  print(pages.write(out, pages.music_page("What the frame keeps", intro, [], sections)))


if __name__ == "__main__":
  app.run(main)

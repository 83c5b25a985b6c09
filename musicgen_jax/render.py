"""The render program: any MIDI file to audio through a SoundFont.

    python -m musicgen_jax.render IN.mid [OUT.ogg] [--soundfont=PATH] [--sample_rate=22050]

OUT defaults to IN with .ogg; its extension picks the format (.ogg, .wav, .flac). Needs
the audio extra: pip install 'musicgen-jax[audio]'.
"""

from __future__ import annotations

import json
import os

from absl import flags

from musicgen_jax import audio, cli


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("soundfont", None, "A .sf2/.sf3 SoundFont (default: $"
                      f"{audio.SOUNDFONT_ENV}, else an installed General MIDI one).",
                      flag_values=flag_values)
  flags.DEFINE_integer("sample_rate", audio.SAMPLE_RATE, "Samples per second.", lower_bound=8000,
                       flag_values=flag_values)


def main(flag_values: flags.FlagValues, args: list[str]) -> None:
  if not 1 <= len(args) <= 2:
    raise cli.UsageError("give a MIDI file and, optionally, where the audio goes: "
                         "python -m musicgen_jax.render IN.mid [OUT.ogg]")
  midi_path = args[0]
  if not os.path.isfile(midi_path):
    raise FileNotFoundError(f"{midi_path} does not exist; give a MIDI file")
  out_path = args[1] if len(args) > 1 else os.path.splitext(midi_path)[0] + ".ogg"
  audio.render_midi(midi_path, out_path, soundfont=flag_values.soundfont,
                    sample_rate=flag_values.sample_rate)
  print(json.dumps({"audio": os.path.abspath(out_path)}))


def run():
  cli.run(main, define_flags, positional=True)


if __name__ == "__main__":
  run()

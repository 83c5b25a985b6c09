r"""The sampling program: a trained workdir to MIDI files (see `musicgen_jax.generate`).

    python -m musicgen_jax.sample --workdir=W --num_frames=512 --num_samples=4 \
        --temperature=1.0 --prime_midi=F --prime_frames=10 --out_dir=O
    python -m musicgen_jax.sample --pretrained=chorales --num_frames=256 --out_dir=O
    python -m musicgen_jax.sample --pretrained=list
    python -m musicgen_jax.sample --workdir=W --num_samples=8 --num_frames=256 \
        --reference=test --out_dir=O      # + the judge against the held-out split

Reads W/config.json (so no model flags) and the best-by-validation checkpoint (or --step),
or a model shipped in the package; writes O/sample_000.mid, .json, .png and .ogg, ..., and
O/index.html, a page that plays them (its path is printed with the rest); with --reference,
O/judge.json (`musicgen_jax.judge`: can a classifier tell the samples from real music?). Bad
input is one line, before any model is loaded or compiled.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from musicgen_jax import cli, generate, judge, pretrained, sampling
from musicgen_jax.settings import define_flags as define_settings_flags
from musicgen_jax.settings import from_flags


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The sampling flags; the model comes from W/config.json."""
  flags.DEFINE_string("workdir", None, "Training workdir holding config.json and checkpoints/.",
                      flag_values=flag_values)
  flags.DEFINE_string("pretrained", None, "Instead of --workdir: a model shipped in the "
                      "package ('list' lists them), or the path of a model folder.", flag_values=flag_values)
  flags.DEFINE_string("out_dir", None, "Folder for sample_000.mid, .json and .png, ...",
                      flag_values=flag_values)
  flags.DEFINE_bool("overwrite", False, "Replace the samples already in --out_dir.",
                    flag_values=flag_values)
  define_settings_flags(sampling.SampleSettings, flag_values)
  define_settings_flags(generate.GenerateConfig, flag_values)


def main(flag_values: flags.FlagValues) -> None:
  if flag_values.pretrained == "list":
    print(pretrained.describe_all())
    return
  if bool(flag_values.workdir) == bool(flag_values.pretrained):
    raise cli.UsageError("give --workdir (a trained run) or --pretrained (--pretrained=list "
                         "lists them)")
  cli.require(flag_values, "out_dir")
  options = dict(dataclasses.asdict(from_flags(sampling.SampleSettings, flag_values)),
                 **dataclasses.asdict(from_flags(generate.GenerateConfig, flag_values)))
  if flag_values.pretrained:
    for key in pretrained.SAMPLING_KEYS:  # unless given, the model's own (chosen by the judge)
      if not flag_values[key].present:
        options.pop(key)
    result = generate.sample_pretrained(flag_values.pretrained, flag_values.out_dir,
                                        overwrite=flag_values.overwrite, **options)
  else:
    result = generate.sample_workdir(flag_values.workdir, flag_values.out_dir,
                                     overwrite=flag_values.overwrite, **options)
  summary = {"out_dir": os.path.abspath(flag_values.out_dir),
             "midi": [os.path.basename(p) for p in result.midi_paths],
             "audio": [os.path.basename(p) for p in result.audio_paths],
             "page": os.path.abspath(result.page_path),
             "checkpoint_step": result.record["checkpoint_step"],
             "frames_per_s": result.record["frames_per_s"]}
  if result.judge is not None:
    summary["judge"] = judge.summary(result.judge)
  print(json.dumps(summary))


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()

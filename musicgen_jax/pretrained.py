r"""Trained models shipped inside the package, and how one is made from a workdir.

    python -m musicgen_jax.sample --pretrained=list
    python -m musicgen_jax.sample --pretrained=chorales --num_frames=256 --out_dir=O

Each model is a folder of musicgen_jax/pretrained_models/: config.json (the run's
RunConfig), params.npz (the parameters, numpy arrays named by their path in the tree:
never pickle), prime.mid (a few bars it continues by default) and info.json (what it is,
where its music comes from, its licence, its test NLL). Loading checks every array
against the current model code's parameter shapes, so a model change cannot silently
break a shipped model.

    python -m musicgen_jax.pretrained --workdir=W --name=NAME --prime_midi=F \
        --description=... --source=... --licence=... [--prime_frames=N]  # a new model folder

Wherever a model's name is taken (`--pretrained`), the path of a model folder written
elsewhere (`export(..., models_dir=D)`, or an earlier version's) works too.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
from absl import flags

from musicgen_jax import cli
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.config import RunConfig
from musicgen_jax.models import init_params

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_models")
FILES = ("config.json", "params.npz", "prime.mid", "info.json")


def names() -> list[str]:
  if not os.path.isdir(MODELS_DIR):
    return []
  return sorted(n for n in os.listdir(MODELS_DIR)
                if os.path.isfile(os.path.join(MODELS_DIR, n, "info.json")))


def model_dir(name: str) -> str:
  """The folder of a shipped model, by name; or `name` itself when it is the path of a
  model folder (as `export` writes one elsewhere)."""
  if os.sep in name and os.path.isfile(os.path.join(name, "info.json")):
    return name
  if name not in names():
    raise ValueError(f"no pretrained model {name!r}; choose one of {', '.join(names())} "
                     "(--pretrained=list describes them), or give the path of a model folder")
  return os.path.join(MODELS_DIR, name)


def info(name: str) -> dict:
  """info.json of a shipped model, with its size on disk."""
  folder = model_dir(name)
  with open(os.path.join(folder, "info.json")) as f:
    described = json.load(f)
  described["size_bytes"] = sum(os.path.getsize(os.path.join(folder, f)) for f in FILES)
  return described


def sampling_defaults(name: str) -> dict:
  """The sampling settings (SAMPLING_KEYS) the judge chose for a shipped model
  (`choose_sampling`), or {} for a model shipped without them."""
  chosen = info(name).get("sampling") or {}
  return {k: chosen[k] for k in SAMPLING_KEYS if k in chosen}


def prime_path(name: str) -> str:
  return os.path.join(model_dir(name), "prime.mid")


def _key(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def _flatten(tree) -> dict:
  """{'layer_0/hi/kernel': leaf, ...}: each leaf named by its path in the tree."""
  return {_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load(name: str) -> workdir_lib.TrainedRun:
  """The shipped model as a TrainedRun; ValueError if its arrays no longer fit the code."""
  folder = model_dir(name)
  config = RunConfig.load(folder)
  expected = jax.eval_shape(lambda: init_params(config.model, jax.random.key(0)))
  with np.load(os.path.join(folder, "params.npz"), allow_pickle=False) as stored:
    arrays = {k: stored[k] for k in stored.files}
  shapes = {k: tuple(v.shape) for k, v in _flatten(expected).items()}
  if shapes != {k: tuple(v.shape) for k, v in arrays.items()}:
    missing = sorted(set(shapes) - set(arrays))
    extra = sorted(set(arrays) - set(shapes))
    raise ValueError(f"the pretrained {name!r} does not fit this version's {config.model.model} "
                     f"(missing {missing[:3]}, unexpected {extra[:3]}, or other shapes)")
  leaves, treedef = jax.tree_util.tree_flatten_with_path(expected)
  params = jax.tree_util.tree_unflatten(treedef, [arrays[_key(path)] for path, _ in leaves])
  return workdir_lib.TrainedRun(config=config, params=params, step=info(name)["step"],
                                workdir=folder)


def write_prime(config: RunConfig, source_midi: str, frames: int, path: str) -> None:
  """The first `frames` frames of `source_midi`, encoded with the run's frame (note lengths,
  pedal, velocity as it was trained) and decoded to MIDI at the file's tempo and metre."""
  from musicgen_jax import encoding  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import encode_file  # pylint: disable=g-import-not-at-top
  encoded, stats = encode_file(config.data, source_midi)  # with metre: written with its pickup
  if len(encoded) < frames:
    raise ValueError(f"{source_midi} has {len(encoded)} frames, fewer than --prime_frames="
                     f"{frames}")
  encoding.frames_to_midi(encoded[:frames], tempo_bpm=stats.tempo_bpm,
                          steps_per_quarter=config.data.steps_per_quarter,
                          time_signature=stats.time_signature).save(path)


SAMPLING_KEYS = ("temperature", "top_p", "max_polyphony")  # chosen by choose_sampling


def _judged(workdir: str) -> dict:
  """What the judge said of W, for info.json: W/sampling.json (`choose_sampling` on the
  validation split: the chosen setting and its curve) as 'sampling', and W/judge.json (the
  judge of samples against held-out music: `sample --reference=test`'s judge.json, or
  `choose_sampling --split=test`'s output) as 'judge'."""
  out = {}
  path = os.path.join(workdir, "sampling.json")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      chosen = json.load(f)
    keys = ("split", "length", "balanced_accuracy", "spread", "floor", "floor_spread")
    out["sampling"] = dict(
        {k: chosen[k] for k in keys + SAMPLING_KEYS if k in chosen},
        curve=[{k: r[k] for k in SAMPLING_KEYS + ("balanced_accuracy", "spread") if k in r}
               for r in chosen["curve"]])
  path = os.path.join(workdir, "judge.json")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      verdict = json.load(f)
    out["judge"] = _judge_summary(verdict)
  return out


def _judge_summary(verdict: dict) -> dict:
  """The headline of `sample --reference`'s judge.json, or of `choose_sampling`'s output
  (then: its primes are the split's own pieces)."""
  from musicgen_jax import judge  # pylint: disable=g-import-not-at-top
  if "generated" in verdict:
    return judge.summary(verdict)
  return {"reference": f"the {verdict['split']} split, each piece priming "
                       f"{verdict['samples_per_prime']} continuations",
          **{k: round(verdict[k], 4) for k in ("balanced_accuracy", "spread", "floor",
                                               "floor_spread")},
          "above_floor": round(verdict["balanced_accuracy"] - verdict["floor"], 4),
          **{k: verdict[k] for k in SAMPLING_KEYS if k in verdict}}


def export(workdir: str, name: str, prime_midi: str, described: dict,
           models_dir: str = MODELS_DIR, prime_frames: int = 0) -> str:
  """Writes W's best checkpoint as a shipped model; returns its folder.

  prime_midi is shipped as prime.mid as it is, or (prime_frames > 0) its first prime_frames
  frames as the model reads them (`write_prime`).
  """
  from musicgen_jax import evaluate  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  run = workdir_lib.load_run(workdir)
  folder = os.path.join(models_dir, name)
  os.makedirs(folder, exist_ok=True)
  run.config.save(folder)
  np.savez_compressed(os.path.join(folder, "params.npz"),
                      **{k: np.asarray(v) for k, v in _flatten(run.params).items()})
  if prime_frames:
    write_prime(run.config, prime_midi, prime_frames, os.path.join(folder, "prime.mid"))
  else:
    shutil.copy(prime_midi, os.path.join(folder, "prime.mid"))
  test = evaluate.evaluate_pieces(run.config.model, run.params,
                                  load_dataset(run.config.data)["test"])
  described = dict(described, name=name, step=run.step, model=run.config.model.model,
                   note_head=run.config.model.note_head,
                   test_nll=round(test["nll"], 4), test_nll_notes=round(test["nll_notes"], 4),
                   num_params=int(sum(np.size(x) for x in jax.tree.leaves(run.params))))
  if run.config.model.velocity_bins:
    described["test_nll_velocity"] = round(test["nll_velocity"], 4)
  if run.config.model.note_lengths:
    described["test_nll_length"] = round(test["nll_length"], 4)
  described.update(_judged(workdir))
  with open(os.path.join(folder, "info.json"), "w") as f:
    json.dump(described, f, indent=2)
    f.write("\n")
  return folder


def describe_all() -> str:
  """The --pretrained=list table."""
  lines = [f"{'name':<10} {'model':<22} {'test NLL':>9} {'size':>8}  music"]
  for name in names():
    i = info(name)
    lines.append(f"{name:<10} {i['model'] + ', ' + i['note_head'] + ' head':<22} "
                 f"{i['test_nll']:>9.3f} {i['size_bytes'] / 2**20:>6.1f}MB  {i['description']}")
  return "\n".join(lines)


# The export program ---------------------------------------------------------------------


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  for name, help_text in (
      ("workdir", "The trained run to ship (its best checkpoint)."),
      ("name", "The model's name (a folder of pretrained_models/)."),
      ("prime_midi", "A few bars it continues by default (shipped as prime.mid)."),
      ("description", "What the model writes, in a few words."),
      ("source", "Where its training music comes from."),
      ("licence", "The licence of that music.")):
    flags.DEFINE_string(name, None, help_text, flag_values=flag_values)
  flags.DEFINE_integer("prime_frames", 0, "Ship only the first this many frames of "
                       "--prime_midi, as the model reads them (0: the file as it is).",
                       lower_bound=0, flag_values=flag_values)


def main(flag_values: flags.FlagValues) -> None:
  cli.require(flag_values, "workdir", "name", "prime_midi", "description", "source", "licence")
  folder = export(flag_values.workdir, flag_values.name, flag_values.prime_midi,
                  {k: flag_values[k].value for k in ("description", "source", "licence")},
                  prime_frames=flag_values.prime_frames)
  print(json.dumps(info(folder)))


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()

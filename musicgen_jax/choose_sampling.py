r"""Sampling settings chosen by the judge: which temperature and top-p write the music a
classifier finds hardest to tell from real music?

The lowest-NLL model sampled at temperature 1 need not write the most convincing music. For
each (temperature, top_p, and optionally max_polyphony) of a grid, every held-out piece of a
split (validation by default) primes `samples_per_prime` continuations; the judge
(`musicgen_jax.judge`) tells their frames after the prime from that split's real excerpts of
the same length. The setting with the lowest balanced accuracy wins (ties within 0.005: the
one nearer temperature 1, top_p 1, without a polyphony cap).
The floor beside it is the judge between the training split and that split.

    python -m musicgen_jax.choose_sampling --workdir=W --split=valid \
        --temperatures=0.8,0.9,1.0,1.1 --top_ps=0.9,1.0 --output=W/sampling.json
    python -m musicgen_jax.choose_sampling --pretrained=chorales --split=test \
        --temperatures=0.9 --top_ps=1.0        # one setting scored on held-out primes

`musicgen_jax.pretrained` stores the chosen setting and its curve in a shipped model's
info.json (W/sampling.json when present), and `sample --pretrained` samples with it unless
--temperature, --top_p or --max_polyphony is given.
Needs scikit-learn: pip install 'musicgen-jax[judge]'.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence

import numpy as np
from absl import flags, logging

from musicgen_jax import cli, generate, judge, sampling

TIE = 0.005  # balanced accuracies closer than this count as equal
KEYS = ("temperature", "top_p", "max_polyphony")  # the settings searched


def _sample_primes(run, primes: Sequence[np.ndarray], settings: sampling.SampleSettings,
                   samples_per_prime: int, seed: int) -> list[np.ndarray]:
  """Every prime's continuations (their frames after the prime), one batch per prime."""
  allowed = generate.allowed_pitches(run.config.model, generate.GenerateConfig())
  out = []
  for i, prime in enumerate(primes):
    frames, _ = generate.sample_frames(run.config.model, run.params, prime, settings,
                                       samples_per_prime, seed + i, allowed)
    out += list(frames[:, len(prime):])
  return out


def score_grid(run, pieces: Sequence, temperatures: Sequence[float],
               top_ps: Sequence[float], *, max_polyphonies: Sequence[int] = (0,),
               num_frames: int = judge.DEFAULT_LENGTH, prime_frames: int = 10,
               samples_per_prime: int = 4, seed: int = 0) -> list[dict]:
  """The judge of each (temperature, top_p, max_polyphony) against `pieces` (the split's
  real music).

  Returns [{'temperature', 'top_p', 'max_polyphony', 'balanced_accuracy', 'spread',
  'excerpts', 'giveaways', 'seconds'}], one per setting, in grid order.
  """
  frames = [getattr(p, "frames", p) for p in pieces]
  primes = [f[:prime_frames] for f in frames if len(f) >= prime_frames]
  if not primes:
    raise ValueError(f"no piece of the split has --prime_frames={prime_frames} frames")
  generate.check_prime_fits(run.config.model, prime_frames)
  length = judge.excerpt_length(num_frames)
  judge.check_enough(len(primes) * samples_per_prime * (num_frames // length), length,
                     f"{len(primes)} primes x --samples_per_prime={samples_per_prime}",
                     hint=judge.SAMPLES_HINT)
  judge.check_enough(len(judge.excerpts(frames, length)), length, "the split",
                     hint=judge.SAMPLES_HINT)
  curve = []
  for setting in itertools.product(temperatures, top_ps, max_polyphonies):
    start = time.perf_counter()
    settings = sampling.SampleSettings(num_frames=num_frames, **dict(zip(KEYS, setting)))
    generated = _sample_primes(run, primes, settings, samples_per_prime, seed)
    verdict = judge.two_sample_test(generated, frames, length=length,
                                    steps_per_quarter=run.config.data.steps_per_quarter)
    curve.append(dict(zip(KEYS, setting), balanced_accuracy=verdict["balanced_accuracy"],
                      spread=verdict["spread"], excerpts=verdict["excerpts_a"],
                      giveaways=[g["feature"] for g in verdict["giveaways"][:3]],
                      seconds=round(time.perf_counter() - start, 1)))
    logging.info("temperature %g, top_p %g, max_polyphony %d: balanced accuracy %.3f +- "
                 "%.3f (%.0f s)", *setting, verdict["balanced_accuracy"], verdict["spread"],
                 curve[-1]["seconds"])
  return curve


def best_of(curve: Sequence[dict]) -> dict:
  """The lowest balanced accuracy; within TIE of it, the setting nearest T=1, top_p=1 (and
  then the one without a polyphony limit, else the loosest)."""
  lowest = min(r["balanced_accuracy"] for r in curve)
  near = [r for r in curve if r["balanced_accuracy"] <= lowest + TIE]
  return min(near, key=lambda r: (abs(r["temperature"] - 1.0) + abs(r["top_p"] - 1.0),
                                  -(r.get("max_polyphony") or 10**6)))


def choose(run, dataset, split: str = "valid", temperatures: Sequence[float] = (1.0,),
           top_ps: Sequence[float] = (1.0,), *, num_frames: int = judge.DEFAULT_LENGTH,
           **kw) -> dict:
  """score_grid on `split` of a loaded dataset, with the best setting and the judge's floor
  (training split against `split`)."""
  pieces, train, _ = judge.reference_sets(run.config.data, split, dataset)
  curve = score_grid(run, pieces, temperatures, top_ps, num_frames=num_frames, **kw)
  length = judge.excerpt_length(num_frames)
  floor = judge.two_sample_test(train, pieces, length=length,
                                steps_per_quarter=run.config.data.steps_per_quarter)
  best = best_of(curve)
  return {"split": split, "num_pieces": len(pieces), "length": length,
          **{k: best[k] for k in KEYS},
          "balanced_accuracy": best["balanced_accuracy"], "spread": best["spread"],
          "floor": floor["balanced_accuracy"], "floor_spread": floor["spread"],
          "curve": curve, "num_frames": num_frames, **kw}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/).",
                      flag_values=flag_values)
  flags.DEFINE_string("pretrained", None, "Instead of --workdir: a model shipped in the "
                      "package (its data must be where its config says).",
                      flag_values=flag_values)
  flags.DEFINE_enum("split", "valid", ["valid", "test"], "Whose pieces prime the samples and "
                    "are the real music they are judged against.", flag_values=flag_values)
  flags.DEFINE_list("temperatures", ["0.8", "0.9", "1.0", "1.1"], "Note temperatures to try.",
                    flag_values=flag_values)
  flags.DEFINE_list("top_ps", ["0.9", "1.0"], "Duration top-p values to try.",
                    flag_values=flag_values)
  flags.DEFINE_list("max_polyphonies", ["0"], "Notes-per-frame limits to try (0 = none; see "
                    "sample --max_polyphony).", flag_values=flag_values)
  flags.DEFINE_integer("num_frames", judge.DEFAULT_LENGTH, "Frames sampled after each prime "
                       "(the judge's excerpts are as long, at most 256).", lower_bound=2,
                       flag_values=flag_values)
  flags.DEFINE_integer("prime_frames", 10, "Frames of each held-out piece that prime it.",
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer("samples_per_prime", 4, "Continuations per prime.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Sampling seed (prime i uses seed + i).",
                       flag_values=flag_values)
  flags.DEFINE_string("output", None, "Also write the result here as JSON.",
                      flag_values=flag_values)


def _floats(values: Sequence[str], name: str) -> list[float]:
  try:
    return [float(v) for v in values]
  except ValueError as e:
    raise cli.UsageError(f"--{name} must be numbers, got {','.join(values)}") from e


def main(flag_values: flags.FlagValues) -> None:
  from musicgen_jax import pretrained  # pylint: disable=g-import-not-at-top
  from musicgen_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  if bool(flag_values.workdir) == bool(flag_values.pretrained):
    raise cli.UsageError("give --workdir (a trained run) or --pretrained (a shipped model)")
  temperatures = _floats(flag_values.temperatures, "temperatures")
  top_ps = _floats(flag_values.top_ps, "top_ps")
  limits = [int(v) for v in _floats(flag_values.max_polyphonies, "max_polyphonies")]
  for setting in itertools.product(temperatures, top_ps, limits):  # every value checked first
    sampling.SampleSettings(**dict(zip(KEYS, setting)))
  judge.require_sklearn()
  run = (workdir_lib.load_run(flag_values.workdir) if flag_values.workdir
         else pretrained.load(flag_values.pretrained))
  result = choose(run, load_dataset(run.config.data), flag_values.split, temperatures, top_ps,
                  max_polyphonies=limits, num_frames=flag_values.num_frames,
                  prime_frames=flag_values.prime_frames,
                  samples_per_prime=flag_values.samples_per_prime, seed=flag_values.seed)
  print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
  if flag_values.output:
    with open(flag_values.output, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)
      f.write("\n")


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()

"""A classifier two-sample test: can simple features tell generated excerpts from real ones?

Each set of pieces (<float32>[T, F] frames, any `encoding.FrameLayout`) is cut into
excerpts of the same number of frames, each excerpt becomes a vector of plain features
(`FEATURE_GROUPS`), and a random forest is cross-validated at telling the two sets apart.
The score is the balanced accuracy on the held-out folds: 0.5 when the sets cannot be told
apart, 1.0 when every excerpt is classified right. Its spread is over folds and seeds.

Two sets of real music are not indistinguishable either (other works, other composers), so
the honest reference is the test's *floor*: the same test between two real sets, e.g. the
training split's excerpts against the held-out split's. A model is as convincing as this
test can measure when its score against the held-out excerpts reaches that floor.

    report = judge.two_sample_test(generated, held_out, length=256)
    report["balanced_accuracy"], report["spread"], report["giveaways"][:3]
    floor = judge.two_sample_test(train, held_out, length=256)

The program compares any two folders of MIDI:

    python -m musicgen_jax.judge --generated=DIR --real=DIR [--floor=DIR] [--length=256]

Needs scikit-learn: pip install 'musicgen-jax[judge]'.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
from absl import flags

from musicgen_jax import cli, encoding, music_stats
from musicgen_jax.data import pipeline
from musicgen_jax.data.config import DataConfig

MAX_INTERVAL = 12  # melodic steps of the top voice, clipped to +-12 semitones
MAX_POLYPHONY = 8  # notes struck at once; more go in the last bin
# inter-onset times in grid steps: bin k holds IOI_EDGES[k] <= steps < IOI_EDGES[k + 1]
IOI_EDGES = (1, 2, 3, 4, 5, 6, 8, 9, 12, 16, 18, 24, 36, 48, 72, 96)
DEFAULT_LENGTH = 256
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_FOLDS = 5


def _names() -> tuple[str, ...]:
  pcs = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
  return (tuple(f"pitch_class_{n}" for n in pcs)
          + tuple(f"interval_{i:+d}" for i in range(-MAX_INTERVAL, MAX_INTERVAL + 1))
          + tuple(f"onset_position_{k}" for k in range(12))
          + tuple(f"ioi_{a}" for a in IOI_EDGES)
          + tuple(f"polyphony_{k}" for k in range(MAX_POLYPHONY + 1))
          + ("pitch_range", "mean_pitch", "pitch_spread", "held_at_onsets", "repeated_frames",
             "mean_velocity", "velocity_spread"))


FEATURE_NAMES = _names()
# what a giveaway is reported as: the group of its feature
FEATURE_GROUPS = ("pitch_class", "interval", "onset_position", "ioi", "polyphony",
                  "pitch_range", "mean_pitch", "pitch_spread", "held_at_onsets",
                  "repeated_frames", "mean_velocity", "velocity_spread")


def _histogram(values: np.ndarray, bins: int) -> np.ndarray:
  counts = np.bincount(values, minlength=bins)[:bins].astype(np.float64)
  return counts / max(counts.sum(), 1.0)


def _top_voice_intervals(notes: np.ndarray) -> np.ndarray:
  """Semitone steps between the highest notes of successive frames with notes, clipped."""
  struck = notes.any(axis=1)
  top = notes.shape[1] - 1 - np.argmax(notes[struck, ::-1], axis=1)
  return np.clip(np.diff(top), -MAX_INTERVAL, MAX_INTERVAL) + MAX_INTERVAL


def _onset_positions(frames: np.ndarray, spq: int) -> np.ndarray:
  """Where the onsets with notes fall within the beat, in 12 bins (of any grid)."""
  position = music_stats.onset_positions([frames], spq)
  return np.bincount(np.arange(spq) * 12 // spq, weights=position, minlength=12)[:12]


def excerpt_features(frames, *, steps_per_quarter: int = 12) -> np.ndarray:
  """float64[len(FEATURE_NAMES)]: the plain features of one excerpt (see FEATURE_NAMES).

  Pitch classes, top-voice intervals, onset positions within the beat, inter-onset times and
  notes per onset (its 0 bin: rests) are shares; pitch range, mean pitch and spread in
  semitones; held_at_onsets the mean number of notes still sounding from before at an onset
  (0 without note lengths); velocities are 0 for frames without dynamics.
  """
  frames = music_stats._frames(frames)  # pylint: disable=protected-access
  notes = frames[:, :encoding.NUM_NOTES] > 0.5
  pitches = np.nonzero(notes)[1]
  per_frame = notes.sum(axis=1)
  pc = _histogram((pitches + encoding.LOWEST_PITCH) % 12, 12)
  steps = np.diff(encoding.frame_steps(frames, steps_per_quarter))
  ioi = np.searchsorted(IOI_EDGES, np.maximum(steps[per_frame > 0], 1), side="right") - 1
  sounding = music_stats.sounding_at_onsets([frames], steps_per_quarter)
  struck = per_frame[per_frame > 0]
  held = sounding - (struck.mean() if struck.size else 0.0)
  velocity = (frames[per_frame > 0, encoding.VELOCITY_INDEX]
              if encoding.has_velocity(frames) and struck.size else np.zeros(1))
  repeated = (np.all(frames[1:] == frames[:-1], axis=1).mean() if len(frames) > 1 else 0.0)
  scalars = [np.ptp(pitches) if pitches.size else 0.0,
             pitches.mean() if pitches.size else 0.0,
             pitches.std() if pitches.size else 0.0,
             max(held, 0.0), repeated, velocity.mean(), velocity.std()]
  return np.concatenate([
      pc, _histogram(_top_voice_intervals(notes), 2 * MAX_INTERVAL + 1),
      _onset_positions(frames, steps_per_quarter), _histogram(ioi, len(IOI_EDGES)),
      _histogram(np.minimum(per_frame, MAX_POLYPHONY), MAX_POLYPHONY + 1),
      np.asarray(scalars, np.float64)])


def excerpts(pieces: Sequence, length: int) -> list[np.ndarray]:
  """Non-overlapping excerpts of exactly `length` frames; shorter pieces and tails dropped."""
  if length < 2:
    raise ValueError(f"excerpts need at least 2 frames, got length={length}")
  return [e for e in music_stats.segments(pieces, length) if len(e) == length]


def read_midi_folder(folder: str, *, steps_per_quarter: int = 12, with_velocity: bool = True,
                     data_config: DataConfig | None = None) -> list[np.ndarray]:
  """Every .mid/.midi file directly in folder, encoded as new runs encode (note lengths, the
  sustain pedal applied, metre from the file's first time signature), or as `data_config`
  (a run's data settings) encodes, so that generated and real MIDI are read alike. Files
  without notes are skipped."""
  if data_config is None:
    data_config = DataConfig(dataset="midi_dir", data_dir=folder,
                             steps_per_quarter=steps_per_quarter,
                             note_lengths=True, sustain_pedal="apply", metre=True,
                             velocity_bins=16 if with_velocity else 0)
  cfg = dataclasses.replace(data_config, dataset="midi_dir", data_dir=folder)
  pieces = [f for f in (pipeline.encode_file(cfg, p)[0] for p in music_stats.midi_paths(folder))
            if len(f)]
  if not pieces:
    raise ValueError(f"the MIDI files in {folder} hold no notes")
  return pieces


def reference_sets(data_config: DataConfig, reference: str, dataset=None):
  """(real, floor_reference, description) for judging a run's samples.

  reference: 'valid' or 'test' (that split of the run's dataset; its floor is the training
  split against it), or a folder of MIDI encoded with the run's data settings (no floor).
  dataset: the run's loaded Dataset, or None to load it (cached) from data_config.
  """
  if reference in ("valid", "test"):
    if dataset is None:
      dataset = pipeline.load_dataset(data_config)
    return list(dataset[reference]), list(dataset["train"]), f"the {reference} split"
  if not os.path.isdir(reference):
    raise FileNotFoundError(f"--reference={reference} is neither 'valid', 'test' nor a folder "
                            "of MIDI files")
  return read_midi_folder(reference, data_config=data_config), None, os.path.abspath(reference)


def excerpt_length(num_frames: int) -> int:
  """Frames per judged excerpt of samples `num_frames` long: DEFAULT_LENGTH, or all of them
  when fewer are sampled."""
  return min(DEFAULT_LENGTH, num_frames)


# what to change when sampled music is too little to judge
SAMPLES_HINT = (f"excerpts are as long as the samples, at most {DEFAULT_LENGTH} frames: "
                "sample fewer frames or more samples")


def check_enough(count: int, length: int, what: str, folds: int = DEFAULT_FOLDS,
                 hint: str = "shorten --length or give more music") -> None:
  """Fails unless `count` excerpts of `length` frames are enough for `folds` folds."""
  if count < folds:
    raise ValueError(f"the judge needs at least {folds} excerpts of {length} frames in each "
                     f"set; {what} gives {count} ({hint})")


def require_sklearn():
  try:
    import sklearn  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise ImportError("the judge needs scikit-learn: pip install 'musicgen-jax[judge]'") from e


def _scores(x: np.ndarray, y: np.ndarray, folds: int, seeds: Sequence[int]):
  """Balanced accuracy per (seed, fold) and the forest's mean feature importances."""
  # pylint: disable=import-outside-toplevel
  from sklearn.ensemble import RandomForestClassifier
  from sklearn.metrics import balanced_accuracy_score
  from sklearn.model_selection import StratifiedKFold
  scores, importances = [], np.zeros(x.shape[1])
  for seed in seeds:
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(x, y):
      forest = RandomForestClassifier(n_estimators=200, min_samples_leaf=2,
                                      class_weight="balanced", random_state=seed, n_jobs=1)
      forest.fit(x[train], y[train])
      scores.append(balanced_accuracy_score(y[test], forest.predict(x[test])))
      importances += forest.feature_importances_
  return np.asarray(scores), importances / max(len(scores), 1)


def _giveaways(x: np.ndarray, y: np.ndarray, importances: np.ndarray, top: int) -> list[dict]:
  """The feature groups the forest leans on most, each with its most used feature and that
  feature's mean in set a and in set b."""
  group_of = np.array([next(i for i, g in enumerate(FEATURE_GROUPS) if n.startswith(g))
                       for n in FEATURE_NAMES])
  totals = np.bincount(group_of, weights=importances, minlength=len(FEATURE_GROUPS))
  out = []
  for group in np.argsort(-totals)[:top]:
    columns = np.nonzero(group_of == group)[0]
    column = columns[np.argmax(importances[columns])]
    out.append({"group": FEATURE_GROUPS[group], "importance": round(float(totals[group]), 4),
                "feature": FEATURE_NAMES[column], "mean_a": float(x[y == 1, column].mean()),
                "mean_b": float(x[y == 0, column].mean())})
  return out


def two_sample_test(a: Sequence, b: Sequence, *, length: int = DEFAULT_LENGTH,
                    steps_per_quarter: int = 12, folds: int = DEFAULT_FOLDS,
                    seeds: Sequence[int] = DEFAULT_SEEDS, top: int = 5) -> dict:
  """How well a random forest tells set a's excerpts from set b's.

  Args:
    a, b: pieces, <float32>[T, F] frames (or Pieces); e.g. generated and held-out real.
    length: frames per excerpt; both sets are cut alike (shorter pieces are dropped).
    steps_per_quarter: the grid the frames' durations are read on.
    folds: stratified cross-validation folds (each set needs at least this many excerpts).
    seeds: one cross-validation (shuffle and forest) per seed.
    top: how many feature groups to report as giveaways.

  Returns:
    {'balanced_accuracy': mean over seeds and folds, 'spread': their standard deviation,
     'per_seed': the mean per seed, 'excerpts_a', 'excerpts_b', 'length',
     'giveaways': [{'group', 'importance', 'feature', 'mean_a', 'mean_b'}]}.
  """
  require_sklearn()
  xa, xb = excerpts(a, length), excerpts(b, length)
  check_enough(len(xa), length, "the first set", folds)
  check_enough(len(xb), length, "the second set", folds)
  x = np.stack([excerpt_features(e, steps_per_quarter=steps_per_quarter) for e in xa + xb])
  if not all(encoding.has_velocity(e) for e in xa + xb):  # dynamics only where both have them
    x[:, [FEATURE_NAMES.index("mean_velocity"), FEATURE_NAMES.index("velocity_spread")]] = 0.0
  y = np.concatenate([np.ones(len(xa), np.int64), np.zeros(len(xb), np.int64)])
  scores, importances = _scores(x, y, folds, seeds)
  per_seed = scores.reshape(len(seeds), folds).mean(axis=1)
  return {"balanced_accuracy": float(scores.mean()), "spread": float(scores.std()),
          "per_seed": [float(s) for s in per_seed], "excerpts_a": len(xa),
          "excerpts_b": len(xb), "length": length,
          "giveaways": _giveaways(x, y, importances, top)}


def judge(generated: Sequence, real: Sequence, floor_reference: Sequence | None = None,
          **kw) -> dict:
  """two_sample_test(generated, real), with its floor two_sample_test(floor_reference, real)
  when a second real set is given, and 'above_floor' the difference."""
  result = {"generated": two_sample_test(generated, real, **kw)}
  if floor_reference is not None:
    result["floor"] = two_sample_test(floor_reference, real, **kw)
    result["above_floor"] = (result["generated"]["balanced_accuracy"]
                             - result["floor"]["balanced_accuracy"])
  return result


def format_result(result: dict) -> str:
  """One line per test: balanced accuracy +- spread, and the top giveaways."""
  lines = []
  for key in ("generated", "floor"):
    if key in result:
      r = result[key]
      tells = ", ".join(f"{g['feature']} ({g['mean_a']:.3g} vs {g['mean_b']:.3g})"
                        for g in r["giveaways"][:3])
      lines.append(f"{key}: balanced accuracy {r['balanced_accuracy']:.3f} +- {r['spread']:.3f}"
                   f" ({r['excerpts_a']} vs {r['excerpts_b']} excerpts of {r['length']} "
                   f"frames); giveaways: {tells}")
  if "above_floor" in result:
    lines.append(f"above the floor by {result['above_floor']:+.3f}")
  return "\n".join(lines)


def summary(result: dict) -> dict:
  """The judge's headline numbers: balanced accuracy and spread, and the floor's."""
  out = {"reference": result["reference"],
         "balanced_accuracy": round(result["generated"]["balanced_accuracy"], 4),
         "spread": round(result["generated"]["spread"], 4),
         "giveaways": [g["feature"] for g in result["generated"]["giveaways"][:3]]}
  if "samples" in result:  # what was judged (sample --reference says)
    out["samples"] = result["samples"]
  if "floor" in result:
    out.update(floor=round(result["floor"]["balanced_accuracy"], 4),
               floor_spread=round(result["floor"]["spread"], 4),
               above_floor=round(result["above_floor"], 4))
  return out


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("generated", None, "Folder of MIDI files to judge (e.g. samples).",
                      flag_values=flag_values)
  flags.DEFINE_string("real", None, "Folder of real MIDI files to compare against.",
                      flag_values=flag_values)
  flags.DEFINE_string("floor", None, "Optional second folder of real MIDI (e.g. the training "
                      "pieces): the test between it and --real is the floor reported beside.",
                      flag_values=flag_values)
  flags.DEFINE_integer("length", DEFAULT_LENGTH, "Frames per excerpt.", lower_bound=2,
                       flag_values=flag_values)
  flags.DEFINE_integer("steps_per_quarter", 12, "The encoding grid.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("folds", DEFAULT_FOLDS, "Cross-validation folds.", lower_bound=2,
                       flag_values=flag_values)
  flags.DEFINE_list("seeds", [str(s) for s in DEFAULT_SEEDS], "Cross-validation seeds.",
                    flag_values=flag_values)
  flags.DEFINE_string("output", None, "Also write the result here as JSON.",
                      flag_values=flag_values)


def main(flag_values: flags.FlagValues, args: list[str]) -> None:
  if args:
    raise cli.UsageError(f"unexpected arguments {args}; use --generated and --real")
  cli.require(flag_values, "generated", "real")
  read = lambda d: read_midi_folder(d, steps_per_quarter=flag_values.steps_per_quarter)
  floor = read(flag_values.floor) if flag_values.floor else None
  result = judge(read(flag_values.generated), read(flag_values.real), floor,
                 length=flag_values.length, steps_per_quarter=flag_values.steps_per_quarter,
                 folds=flag_values.folds, seeds=[int(s) for s in flag_values.seeds])
  print(format_result(result))
  if flag_values.output:
    with open(flag_values.output, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()

"""Music statistics of pieces, and generated-vs-real comparison (Yang & Lerch 2018).

A piece is <float32>[T, F] frames (any `encoding.FrameLayout`): notes 0/1 in columns 0..105
(MIDI pitch 21 + index), the duration in quarter notes in column 106; the statistics read
those two parts.

Per piece (`piece_features`) and pooled over a set (`set_statistics`):

  pitch_classes_used    distinct pitch classes (0..12)
  pitch_range           highest minus lowest pitch, semitones
  mean_polyphony        notes per non-empty frame
  pitch_class_entropy   Shannon entropy (bits) of the pitch-class histogram of
                        the notes; 0 (one class) .. log2(12) ~ 3.585 (uniform)
  scale_consistency     fraction of notes in the best-fitting of 24 scales: the
                        12 major and the 12 harmonic minor scales (natural minor
                        has the pitch classes of its relative major)
  rest_rate             empty frames / frames
  repeated_frame_rate   frames equal (notes and duration) to the frame before,
                        over the T - 1 frames that have one
  dense_frame_rate      frames with more than DENSE_NOTES notes / frames
  mean_duration         mean frame duration, quarter notes
  duration_histogram    share of frames in each duration class k /
                        steps_per_quarter, k = 1..max_duration_steps (longer
                        durations in the last class, as the model's head)
  pitch_class_histogram share of notes in each pitch class C, C#, ..., B

Frames with dynamics ([T, 108], the onset's mean velocity last) add

  mean_velocity         mean velocity of the frames with notes
  velocity_spread       their standard deviation
  velocity_phrase_change  mean absolute change of the mean velocity from one phrase
                        (PHRASE_FRAMES frames with notes) to the next: how dynamics move

`compare_sets(generated, real)` compares feature by feature with the overlap of
the intra-set and inter-set distance distributions (Yang & Lerch, "On the
evaluation of generative models in music", 2018): for each feature, the
distances |f(r_i) - f(r_j)| between pairs of real pieces (intra-set) and
|f(g_i) - f(r_j)| between generated and real pieces (inter-set; Euclidean for
histograms) are smoothed with a Gaussian kernel density estimate, and the
overlap area, the integral of min(p_intra, p_inter), is reported: ~1 where the
generated pieces are as close to the real ones as real ones are to each other,
~0 where they are far apart. Plain differences of the per-piece means (and the
L1 distance between the pooled histograms) are reported beside it.

    feats = piece_features(frames, steps_per_quarter=12)
    report = compare_sets(generated_frames, real_frames, segment_frames=256)
    report["features"]["pitch_range"]["overlap"]
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence

import numpy as np

from musicgen_jax import encoding

DENSE_NOTES = 10  # a frame with more notes than this counts as dense
PHRASE_FRAMES = 16  # frames with notes per "phrase" of the velocity features
NUM_PITCH_CLASSES = 12
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 11)
KDE_GRID_POINTS = 1024

# Scalar features, in report order; the histogram features follow.
SCALAR_FEATURES = ("pitch_classes_used", "pitch_range", "mean_polyphony", "pitch_class_entropy",
                   "scale_consistency", "rest_rate", "repeated_frame_rate", "dense_frame_rate",
                   "mean_duration")
HISTOGRAM_FEATURES = ("duration_histogram", "pitch_class_histogram")
VELOCITY_FEATURES = ("mean_velocity", "velocity_spread", "velocity_phrase_change")


def _scales() -> np.ndarray:
  """bool[24, 12]: rows 0..11 major scales on C..B, rows 12..23 harmonic minor."""
  rows = []
  for steps in (MAJOR_STEPS, HARMONIC_MINOR_STEPS):
    for tonic in range(NUM_PITCH_CLASSES):
      row = np.zeros(NUM_PITCH_CLASSES, bool)
      row[[(tonic + s) % NUM_PITCH_CLASSES for s in steps]] = True
      rows.append(row)
  return np.stack(rows)


SCALES = _scales()


def _frames(piece) -> np.ndarray:
  frames = np.asarray(getattr(piece, "frames", piece), np.float32)
  encoding.frame_layout(frames, "a piece")
  return frames


def _velocity_counts(frames: np.ndarray, sounding: np.ndarray) -> dict:
  """Sums for the velocity features (zeros for frames without dynamics)."""
  if not encoding.has_velocity(frames):
    return {"velocity_frames": 0, "velocity_sum": 0.0, "velocity_sq_sum": 0.0,
            "phrase_change_sum": 0.0, "phrase_pairs": 0}
  v = frames[sounding, encoding.VELOCITY_INDEX].astype(np.float64)
  phrases = [chunk.mean() for chunk in np.split(v, np.arange(PHRASE_FRAMES, len(v),
                                                             PHRASE_FRAMES))
             if len(chunk)]
  changes = np.abs(np.diff(phrases))
  return {"velocity_frames": int(v.size), "velocity_sum": float(v.sum()),
          "velocity_sq_sum": float((v * v).sum()), "phrase_change_sum": float(changes.sum()),
          "phrase_pairs": int(changes.size)}


def _velocity_features(c: dict) -> dict:
  n = c["velocity_frames"]
  if not n:
    return {}
  mean = c["velocity_sum"] / n
  return {"mean_velocity": mean,
          "velocity_spread": math.sqrt(max(c["velocity_sq_sum"] / n - mean * mean, 0.0)),
          "velocity_phrase_change": (c["phrase_change_sum"] / c["phrase_pairs"]
                                     if c["phrase_pairs"] else math.nan)}


def _counts(frames: np.ndarray, steps_per_quarter: int, max_duration_steps: int) -> dict:
  """Sufficient statistics of one piece; sums over pieces give the pooled set."""
  notes = frames[:, :encoding.NUM_NOTES] > 0.5
  per_frame = notes.sum(axis=1)
  pitch_counts = notes.sum(axis=0).astype(np.int64)  # [106]
  pc_counts = np.zeros(NUM_PITCH_CLASSES, np.int64)
  np.add.at(pc_counts, (np.arange(encoding.NUM_NOTES) + encoding.LOWEST_PITCH) %
            NUM_PITCH_CLASSES, pitch_counts)
  steps = np.round(frames[:, encoding.DURATION_INDEX].astype(np.float64) * steps_per_quarter)
  classes = np.clip(steps, 1, max_duration_steps).astype(np.int64) - 1
  duration_counts = np.bincount(classes, minlength=max_duration_steps)
  repeated = (int(np.all(frames[1:] == frames[:-1], axis=1).sum())
              if len(frames) > 1 else 0)
  return {
      "num_frames": len(frames),
      "num_notes": int(per_frame.sum()),
      "non_empty": int((per_frame > 0).sum()),
      "dense": int((per_frame > DENSE_NOTES).sum()),
      "repeated": repeated,
      "pairs": max(len(frames) - 1, 0),
      "duration_sum": float(frames[:, encoding.DURATION_INDEX].astype(np.float64).sum()),
      "pitch_counts": pitch_counts,
      "pc_counts": pc_counts,
      "duration_counts": duration_counts,
      **_velocity_counts(frames, per_frame > 0),
  }


def _features_from_counts(c: dict) -> dict:
  pc = c["pc_counts"]
  notes = int(pc.sum())
  used = np.nonzero(c["pitch_counts"])[0]
  frames = c["num_frames"]
  if notes:
    p = pc[pc > 0] / notes
    entropy = float(-(p * np.log2(p)).sum())
    scale = float((SCALES.astype(np.int64) @ pc).max() / notes)
    pc_hist = (pc / notes).tolist()
  else:
    entropy = scale = math.nan
    pc_hist = [0.0] * NUM_PITCH_CLASSES
  durations = c["duration_counts"]
  return {
      "pitch_classes_used": int((pc > 0).sum()),
      "pitch_range": int(used[-1] - used[0]) if used.size else math.nan,
      "mean_polyphony": notes / c["non_empty"] if c["non_empty"] else 0.0,
      "pitch_class_entropy": entropy,
      "scale_consistency": scale,
      "rest_rate": (frames - c["non_empty"]) / frames if frames else math.nan,
      "repeated_frame_rate": c["repeated"] / c["pairs"] if c["pairs"] else math.nan,
      "dense_frame_rate": c["dense"] / frames if frames else math.nan,
      "mean_duration": c["duration_sum"] / frames if frames else math.nan,
      "duration_histogram": (durations / frames).tolist() if frames
                            else [0.0] * len(durations),
      "pitch_class_histogram": pc_hist,
      **_velocity_features(c),
  }


def sounding_steps(onsets: np.ndarray, ends: np.ndarray, pitches: np.ndarray,
                   until: int | None = None) -> int:
  """Grid steps during which each pitch sounds (before `until`), summed over pitches; a
  pitch's overlapping notes count once. Notes as `encoding.frames_to_notes` gives them."""
  onsets, ends, pitches = (np.asarray(a, np.int64) for a in (onsets, ends, pitches))
  horizon = int(ends.max(initial=0)) if until is None else until
  total = 0
  for pitch in np.unique(pitches):
    mask = np.zeros(horizon, bool)
    for start, end in zip(onsets[pitches == pitch], ends[pitches == pitch]):
      mask[min(start, horizon):min(end, horizon)] = True
    total += int(mask.sum())
  return total


def onset_positions(pieces: Sequence, steps_per_quarter: int = 12,
                    skip: int = 0) -> np.ndarray:
  """float64[steps_per_quarter]: where the onsets of frames with notes fall within the beat
  (their grid step modulo one quarter note), as fractions summing to 1 (zeros without
  onsets). Frames with metre columns are placed by their bar position (a pickup where the
  file puts it); others by their time from the piece's first onset. Each piece's first
  `skip` frames (a prime) are left out."""
  counts = np.zeros(steps_per_quarter, np.int64)
  for piece in pieces:
    frames = _frames(piece)
    layout = encoding.frame_layout(frames)
    if layout.metre:
      bar_position = frames[:, layout.metre_columns.start]
      starts = np.rint(bar_position * steps_per_quarter).astype(np.int64)
    else:
      starts = encoding.frame_steps(frames, steps_per_quarter)[:-1]
    sounding = (frames[:, :encoding.NUM_NOTES] > 0.5).any(axis=1)
    sounding[:skip] = False
    counts += np.bincount(starts[sounding] % steps_per_quarter, minlength=steps_per_quarter)
  return counts / max(int(counts.sum()), 1)


def sounding_at_onsets(pieces: Sequence, steps_per_quarter: int = 12, skip: int = 0) -> float:
  """Mean number of notes sounding at an onset: those struck there and those still held
  from before (frames with note lengths hold notes across onsets; the study's frame never
  does). Over every frame with notes after each piece's first `skip` frames."""
  sounding, counted = 0, 0
  for piece in pieces:
    frames = _frames(piece)
    onsets, ends, _ = encoding.frames_to_notes(frames, steps_per_quarter=steps_per_quarter)
    starts = encoding.frame_steps(frames, steps_per_quarter)[:-1]
    struck = (frames[:, :encoding.NUM_NOTES] > 0.5).any(axis=1)
    struck[:skip] = False
    times = starts[struck]
    # sounding at t: onset <= t < end, i.e. begun by t less ended by t (ends follow onsets)
    begun = np.searchsorted(np.sort(onsets), times, side="right")
    ended = np.searchsorted(np.sort(ends), times, side="right")
    sounding += int((begun - ended).sum())
    counted += len(times)
  return sounding / max(counted, 1)


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
  """Half the L1 distance between two histograms: 0 alike, 1 disjoint."""
  return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def piece_features(piece, *, steps_per_quarter: int = 12, max_duration_steps: int = 96) -> dict:
  """The features of one piece (see the module docstring); nan where undefined.

  Args:
    piece: <float32>[T, F] frames (or a Piece with .frames).
    steps_per_quarter: the grid; duration class k means k / steps_per_quarter.
    max_duration_steps: duration classes; longer durations go in the last.
  """
  return _features_from_counts(_counts(_frames(piece), steps_per_quarter, max_duration_steps))


def set_statistics(pieces: Sequence, *, steps_per_quarter: int = 12,
                   max_duration_steps: int = 96) -> dict:
  """Pooled statistics of a set (all frames together) and the per-piece means.

  Returns:
    {'num_pieces', 'num_frames', 'num_notes', 'pooled': features of all frames
     together, 'per_piece_mean': {scalar feature: mean over pieces (nan-skipping)}}.
  """
  counts = [_counts(_frames(p), steps_per_quarter, max_duration_steps) for p in pieces]
  if not counts:
    raise ValueError("no pieces to describe")
  total = {k: sum(c[k] for c in counts) for k in counts[0]}
  per_piece = [_features_from_counts(c) for c in counts]
  means = {}
  for name in SCALAR_FEATURES + tuple(n for n in VELOCITY_FEATURES if n in per_piece[0]):
    values = np.array([f[name] for f in per_piece], np.float64)
    means[name] = _json_float(np.nanmean(values)) if np.isfinite(values).any() else None
  pooled = _features_from_counts(total)
  pooled = {k: (_json_float(v) if not isinstance(v, list) else v) for k, v in pooled.items()}
  return {"num_pieces": len(counts), "num_frames": int(total["num_frames"]),
          "num_notes": int(total["num_notes"]), "pooled": pooled, "per_piece_mean": means}


def _json_float(x):
  x = float(x)
  return x if math.isfinite(x) else None


# Overlap of distance distributions (Yang & Lerch 2018) ---------------------------------

def _bandwidth(x: np.ndarray) -> float:
  """Scott's rule, sigma * n^(-1/5); 0 for a constant sample."""
  if x.size < 2:
    return 0.0
  return float(np.std(x, ddof=1) * x.size ** (-1.0 / 5.0))


def _kde(x: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
  """Gaussian kernel density of sample x on grid; chunks keep memory bounded."""
  density = np.zeros_like(grid)
  norm = 1.0 / (x.size * bandwidth * math.sqrt(2.0 * math.pi))
  for start in range(0, x.size, 4096):
    z = (grid[:, None] - x[None, start:start + 4096]) / bandwidth
    density += np.exp(-0.5 * z * z).sum(axis=1)
  return density * norm


def overlap_area(a: Sequence[float], b: Sequence[float]) -> float:
  """Overlapping area of the Gaussian KDEs of samples a and b, in [0, 1].

  Each sample gets its own Scott bandwidth; a constant sample (bandwidth 0)
  borrows 10% of the pooled standard deviation, or 1e-3 when both are constant
  (then identical samples overlap fully and different ones hardly at all).
  The densities are integrated with the trapezoid rule over a grid that covers
  both samples with 5 bandwidths to spare.
  """
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  if not a.size or not b.size:
    return math.nan
  pooled_std = float(np.std(np.concatenate([a, b])))
  fallback = 0.1 * pooled_std if pooled_std > 0 else 1e-3
  bw_a = _bandwidth(a) or fallback
  bw_b = _bandwidth(b) or fallback
  pad = 5.0 * max(bw_a, bw_b)
  lo = min(a.min(), b.min()) - pad
  hi = max(a.max(), b.max()) + pad
  # Enough points that the narrowest kernel spans several of them.
  points = int(min(max(KDE_GRID_POINTS, 8 * (hi - lo) / min(bw_a, bw_b)), 200_000))
  grid = np.linspace(lo, hi, points)
  area = np.trapezoid(np.minimum(_kde(a, grid, bw_a), _kde(b, grid, bw_b)), grid)
  return float(min(max(area, 0.0), 1.0))


def _distances(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
  """Pairwise distances: rows of x among themselves (i < j), or every x to every y.

  x, y: float[n, d] (d = 1 for scalar features); Euclidean distance.
  """
  if y is None:
    i, j = np.triu_indices(len(x), k=1)
    return np.linalg.norm(x[i] - x[j], axis=-1)
  return np.linalg.norm(x[:, None, :] - y[None, :, :], axis=-1).ravel()


def _matrix(features: list[dict], name: str) -> np.ndarray:
  """float[n, d] of one feature over pieces, rows with a nan dropped."""
  rows = np.array([np.atleast_1d(np.asarray(f[name], np.float64)) for f in features])
  return rows[np.isfinite(rows).all(axis=1)]


def segments(pieces: Sequence, length: int) -> list[np.ndarray]:
  """Non-overlapping excerpts of `length` frames (a shorter piece stays whole)."""
  out = []
  for p in pieces:
    frames = _frames(p)
    if len(frames) <= length:
      out.append(frames)
      continue
    out.extend(frames[s:s + length] for s in range(0, len(frames) - length + 1, length))
  return out


def compare_sets(generated: Sequence, real: Sequence, *, steps_per_quarter: int = 12,
                 max_duration_steps: int = 96, segment_frames: int | None = None) -> dict:
  """Generated vs real pieces, feature by feature.

  Args:
    generated: <float32>[T, F] pieces (or Pieces).
    real: the reference pieces (e.g. the test split).
    steps_per_quarter, max_duration_steps: the duration classes.
    segment_frames: cut the real pieces into excerpts of this many frames before
      comparing, so that length-dependent features (pitch range, classes used)
      compare like with like; None compares whole pieces.

  Returns:
    {'generated': set_statistics, 'real': set_statistics (of the excerpts),
     'segment_frames', 'features': {name: {'overlap', 'mean_generated',
     'mean_real', 'mean_difference' (scalars) or 'pooled_l1' (histograms),
     'intra_pairs', 'inter_pairs'}}, 'mean_overlap' (over the features with an
     overlap)}. Overlap is None where a set has too few pieces for distances.
  """
  generated = [_frames(p) for p in generated]
  real = [_frames(p) for p in real]
  if segment_frames:
    real = segments(real, segment_frames)
  if not generated or not real:
    raise ValueError("compare_sets needs at least one generated and one real piece")
  kw = dict(steps_per_quarter=steps_per_quarter, max_duration_steps=max_duration_steps)
  gen_stats, real_stats = set_statistics(generated, **kw), set_statistics(real, **kw)
  gen_feats = [piece_features(p, **kw) for p in generated]
  real_feats = [piece_features(p, **kw) for p in real]
  features, overlaps = {}, []
  dynamics = VELOCITY_FEATURES if all(n in gen_feats[0] and n in real_feats[0]
                                      for n in VELOCITY_FEATURES) else ()
  for name in SCALAR_FEATURES + dynamics + HISTOGRAM_FEATURES:
    g, r = _matrix(gen_feats, name), _matrix(real_feats, name)
    intra = _distances(r) if len(r) >= 2 else np.zeros(0)
    inter = _distances(g, r) if len(g) and len(r) else np.zeros(0)
    overlap = overlap_area(intra, inter) if intra.size and inter.size else math.nan
    entry = {"overlap": _json_float(overlap), "intra_pairs": int(intra.size),
             "inter_pairs": int(inter.size)}
    if name not in HISTOGRAM_FEATURES:
      mg = float(g.mean()) if len(g) else math.nan
      mr = float(r.mean()) if len(r) else math.nan
      entry.update({"mean_generated": _json_float(mg), "mean_real": _json_float(mr),
                    "mean_difference": _json_float(mg - mr)})
    else:
      hg = np.asarray(gen_stats["pooled"][name])
      hr = np.asarray(real_stats["pooled"][name])
      entry["pooled_l1"] = float(np.abs(hg - hr).sum())
    features[name] = entry
    if math.isfinite(overlap):
      overlaps.append(overlap)
  return {"generated": gen_stats, "real": real_stats, "segment_frames": segment_frames,
          "features": features,
          "mean_overlap": float(np.mean(overlaps)) if overlaps else None}


def midi_paths(folder: str) -> list[str]:
  """The .mid/.midi files directly in folder, sorted; an error when there are none."""
  paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                 if p.lower().endswith((".mid", ".midi")))
  if not paths:
    raise FileNotFoundError(f"no .mid/.midi files in {folder}; point it at a folder of MIDI "
                            "files (e.g. the one the sampler wrote)")
  return paths


def read_midi_dir(folder: str, *, steps_per_quarter: int = 12, duration_mode: str = "ioi",
                  with_velocity: bool = False) -> list[np.ndarray]:
  """Every .mid/.midi file directly in folder, encoded; files without notes skipped."""
  paths = midi_paths(folder)
  pieces = []
  for path in paths:
    frames = encoding.midi_to_frames(path, steps_per_quarter=steps_per_quarter,
                                     duration_mode=duration_mode, with_velocity=with_velocity)
    if len(frames):
      pieces.append(frames)
  if not pieces:
    raise ValueError(f"the MIDI files in {folder} hold no notes")
  return pieces


def compare_midi_dir(folder: str, real: Sequence, *, steps_per_quarter: int = 12,
                     duration_mode: str = "ioi", max_duration_steps: int = 96,
                     segment_frames: int | None = -1) -> dict:
  """compare_sets of the MIDI files in folder against real pieces.

  segment_frames: -1 (default) cuts the real pieces into excerpts as long as the
  median generated piece; None compares whole pieces; N > 0 uses N.
  """
  with_velocity = bool(len(real)) and encoding.has_velocity(_frames(real[0]))
  generated = read_midi_dir(folder, steps_per_quarter=steps_per_quarter,
                            duration_mode=duration_mode, with_velocity=with_velocity)
  if segment_frames == -1:
    segment_frames = int(np.median([len(g) for g in generated]))
  result = compare_sets(generated, real, steps_per_quarter=steps_per_quarter,
                        max_duration_steps=max_duration_steps, segment_frames=segment_frames)
  result["samples_dir"] = os.path.abspath(folder)
  result["num_midi_files"] = len(generated)
  return result


def format_table(report: dict) -> str:
  """A markdown table of a compare_sets report: feature, overlap, means."""
  lines = ["| feature | overlap | generated | real | difference |", "|---|---|---|---|---|"]
  fmt = lambda v: "-" if v is None else f"{v:.3f}"
  for name, e in report["features"].items():
    if "mean_difference" in e:
      lines.append(f"| {name} | {fmt(e['overlap'])} | {fmt(e['mean_generated'])} | "
                   f"{fmt(e['mean_real'])} | {fmt(e['mean_difference'])} |")
    else:
      lines.append(f"| {name} | {fmt(e['overlap'])} | | | L1 {fmt(e['pooled_l1'])} |")
  lines.append(f"| **mean overlap** | {fmt(report['mean_overlap'])} | | | |")
  return "\n".join(lines)

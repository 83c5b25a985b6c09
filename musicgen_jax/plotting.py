"""Piano-roll pictures of frames (the `plot` extra: matplotlib).

    piano_roll(frames, "sample_000.png", title="lstm, T=1.0", prime_frames=10)

matplotlib is imported only when a picture is drawn, through its Agg canvas (no
pyplot, no display, no global backend switch), so the rest of the library never
needs it; `available()` says whether it is installed.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from musicgen_jax.encoding import (frame_layout, frame_steps, frames_to_notes, note_velocities,
                                   pitch_name)
PRIME_COLOR = "0.45"  # notes of the prime: grey
SAMPLE_COLOR = "tab:blue"  # generated notes
PRIME_SHADE = "0.92"  # background of the prime region
DPI = 100
MIN_WIDTH_IN, MAX_WIDTH_IN = 8.0, 30.0  # figure width grows with the length, within these
QUARTERS_PER_INCH = 8.0
HEIGHT_IN = 5.0
PITCH_MARGIN = 2  # semitones shown above the highest and below the lowest note


def available() -> bool:
  """True when matplotlib can be imported (the `plot` extra is installed)."""
  return importlib.util.find_spec("matplotlib") is not None


def piano_roll(frames: np.ndarray, path: str, *, title: str | None = None,
               prime_frames: int = 0, steps_per_quarter: int = 12) -> str:
  """Draws frames as a piano roll (time in quarter notes, MIDI pitch) into a PNG.

  Notes are placed as `frames_to_midi` plays them: each frame's notes start at the
  running time and last the frame's duration. The prime (the first `prime_frames`
  frames) is shaded and its notes drawn in grey; generated notes are blue.

  Args:
    frames: float32[T, F] frames (any `FrameLayout`: notes with lengths are drawn for
      their own length; with velocity, opacity follows it).
    path: where the PNG goes (its folder must exist).
    title: the figure title.
    prime_frames: how many leading frames were given rather than generated (0 = none).
    steps_per_quarter: the grid the durations are on.

  Returns:
    `path`.

  Raises:
    ImportError: matplotlib is not installed (see `available()`).
    ValueError: frames are not [T, F] or prime_frames is out of 0..T.
  """
  frames = np.asarray(frames, np.float32)
  layout = frame_layout(frames)
  if not 0 <= prime_frames <= frames.shape[0]:
    raise ValueError(f"prime_frames must be in 0..{frames.shape[0]}, got {prime_frames}")
  # Lazy: matplotlib is an optional extra. The Agg canvas needs no display.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  onsets, ends, pitches = frames_to_notes(frames, steps_per_quarter=steps_per_quarter)
  starts_q = frame_steps(frames, steps_per_quarter) / steps_per_quarter
  prime_end_q = float(starts_q[prime_frames])  # the running time after the prime
  total_q = max(float(starts_q[-1]), 1.0)
  width = float(np.clip(total_q / QUARTERS_PER_INCH, MIN_WIDTH_IN, MAX_WIDTH_IN))
  fig = Figure(figsize=(width, HEIGHT_IN), dpi=DPI)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  if prime_frames:
    ax.axvspan(0.0, prime_end_q, color=PRIME_SHADE, zorder=0)
    ax.axvline(prime_end_q, color=PRIME_COLOR, linestyle="--", linewidth=0.8, zorder=1)
    ax.text(0.0, 1.0, f"prime: {prime_frames} frames", transform=ax.get_xaxis_transform(),
            va="bottom", ha="left", fontsize=8, color=PRIME_COLOR)
  alphas = None
  if layout.velocity:  # louder notes are drawn more opaque
    alphas = np.clip(note_velocities(frames) / 127.0, 0.15, 1.0)
  _draw_notes(ax, onsets / steps_per_quarter, ends / steps_per_quarter, pitches, prime_end_q,
              bool(prime_frames), alphas)
  ax.set_xlim(0.0, total_q)
  ax.set_xlabel("time (quarter notes)")
  ax.set_ylabel("pitch")
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, format="png")
  return path


def _draw_notes(ax, onsets_q, ends_q, pitches, prime_end_q: float, has_prime: bool,
                alphas=None) -> None:
  """One rectangle per note (grey in the prime, blue after it, opacity its velocity when
  given); C pitches labelled."""
  from matplotlib.collections import PolyCollection  # pylint: disable=g-import-not-at-top
  from matplotlib.colors import to_rgba  # pylint: disable=g-import-not-at-top
  in_prime = onsets_q < prime_end_q if has_prime else np.zeros(onsets_q.shape, bool)
  boxes = [[(x0, y - 0.4), (x1, y - 0.4), (x1, y + 0.4), (x0, y + 0.4)]
           for x0, x1, y in zip(onsets_q, ends_q, pitches)]
  if boxes:
    colors = [to_rgba(PRIME_COLOR if p else SAMPLE_COLOR,
                      None if alphas is None else float(alphas[i]))
              for i, p in enumerate(in_prime)]
    ax.add_collection(PolyCollection(boxes, facecolors=colors, edgecolors="none", zorder=2))
    low, high = int(pitches.min()) - PITCH_MARGIN, int(pitches.max()) + PITCH_MARGIN
  else:
    low, high = 21, 108  # an empty roll shows the piano's range
  ax.set_ylim(low - 0.5, high + 0.5)
  c_pitches = [p for p in range(low, high + 1) if p % 12 == 0]
  ax.set_yticks(c_pitches, [pitch_name(p) for p in c_pitches])
  ax.grid(axis="y", color="0.85", linewidth=0.5, zorder=0)

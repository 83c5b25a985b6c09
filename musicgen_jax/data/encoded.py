"""What an encoded corpus is made of: pieces and datasets, and the steps every loader shares
(encoding a chunk of files in a worker, splitting the pieces into sparse stores, the load's
summary and log lines). `pipeline` loads a corpus through one cache file, `shards` through
shards; both build on this.
"""

import dataclasses
import multiprocessing
import os
import sys

from absl import logging
import numpy as np

from musicgen_jax import encoding
from musicgen_jax import midi as midi_lib
from musicgen_jax.data import sources
from musicgen_jax.data import sparse as sparse_lib
from musicgen_jax.data import splits as splits_lib
from musicgen_jax.data.config import DataConfig

_MAX_LISTED_SKIPS = 20  # skipped files named one per line in the log


class Piece:
  """One piece of music.

  Attributes:
    name: the file's path relative to the source root (MIDI sources) or
      '<split>/<index>' (json).
    frames: <float32>[T, F] read-only, the parts of `encoding.FrameLayout`: notes 0/1 in
      columns 0..105 (pitches 21..126), the duration in quarter notes in column 106, then
      velocity, note lengths and metre as the data config asks. A loaded dataset's pieces
      are held sparse (`sparse`: piece `index` of a `SparseFrames`) and made dense on each
      access of `frames`; `Piece(name, frames)` holds dense frames as given.
    tempo_bpm, time_signature: the source file's first tempo and time signature
      (120 and 4/4 where it gives none, and for the json benchmarks).
  """

  __slots__ = ("name", "tempo_bpm", "time_signature", "_frames", "_store", "_index")

  def __init__(self, name: str, frames: np.ndarray | None = None,
               tempo_bpm: float = midi_lib.DEFAULT_TEMPO_BPM,
               time_signature: str = midi_lib.DEFAULT_TIME_SIGNATURE, *,
               sparse: tuple[sparse_lib.SparseFrames, int] | None = None):
    if (frames is None) == (sparse is None):
      raise ValueError("a Piece holds either dense frames or (store, index), not both")
    self.name = name
    self.tempo_bpm = tempo_bpm
    self.time_signature = time_signature
    self._frames = frames
    self._store, self._index = sparse if sparse is not None else (None, None)

  @property
  def frames(self) -> np.ndarray:
    if self._frames is not None:
      return self._frames
    return self._store.piece(self._index)

  @property
  def sparse(self) -> tuple[sparse_lib.SparseFrames, int] | None:
    """(store, index) for a piece held sparse, else None."""
    return None if self._store is None else (self._store, self._index)

  @property
  def num_frames(self) -> int:
    if self._store is not None:
      return self._store.piece_length(self._index)
    return int(self._frames.shape[0])

  def __repr__(self) -> str:
    return f"Piece({self.name!r}, {self.num_frames} frames)"


@dataclasses.dataclass
class Dataset:
  """Encoded pieces in splits, what was skipped, and a summary of the load.

  Attributes:
    splits: {'train', 'valid', 'test'} -> pieces sorted by name.
    skipped: (name, reason) for every file that could not be used.
    summary: counts (files, pieces, frames, notes, dropped notes), timings,
      and the cache file used.
    config: the DataConfig that built it.
  """
  splits: dict[str, list[Piece]]
  skipped: list[tuple[str, str]]
  summary: dict
  config: DataConfig
  shard_of_train: list[int] | None = None  # a sharded corpus's train pieces: their shards

  @property
  def train(self) -> list[Piece]:
    return self.splits["train"]

  @property
  def valid(self) -> list[Piece]:
    return self.splits["valid"]

  @property
  def test(self) -> list[Piece]:
    return self.splits["test"]

  def __getitem__(self, split: str) -> list[Piece]:
    if split not in self.splits:
      raise KeyError(f"unknown split {split!r}: use one of "
                     f"{', '.join(splits_lib.SPLITS)}")
    return self.splits[split]


def available_cores() -> int:
  """CPU cores this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return max(1, os.cpu_count() or 1)


def start_method() -> str:
  """How worker processes start.

  'fork' starts in milliseconds, but forking a process in which JAX has
  started its threads can deadlock; there, 'forkserver' (or 'spawn') starts
  clean workers, at about a second's cost.
  """
  methods = multiprocessing.get_all_start_methods()
  if "fork" in methods and "jax" not in sys.modules:
    return "fork"
  return "forkserver" if "forkserver" in methods else "spawn"


def encode_chunk(kind: str, files: list[sources.SourceFile], settings: dict):
  """Worker task: encodes a list of files; one result tuple per file.

  Bad files (MidiError) come back as skip reasons; anything else is a bug, and
  is raised with the file's name.
  """
  results = []
  for f in files:
    try:
      results.append((f.name,) + sources.encode_source_file(kind, f, settings))
    except Exception as e:
      raise RuntimeError(f"unexpected error encoding {f.name}: "
                         f"{type(e).__name__}: {e}") from e
  return results


def warn_skipped(skipped: list[tuple[str, str]], source: str):
  for name, reason in skipped[:_MAX_LISTED_SKIPS]:
    logging.warning("skipped %s: %s", name, reason)
  if len(skipped) > _MAX_LISTED_SKIPS:
    logging.warning("... and %d more skipped files (see Dataset.skipped)",
                    len(skipped) - _MAX_LISTED_SKIPS)
  if skipped:
    logging.warning("%d file(s) of %s skipped", len(skipped), source)


def no_music_error(source: str, num_files: int,
                    skipped: list[tuple[str, str]]) -> ValueError:
  detail = f"; first: {skipped[0][1]}" if skipped else ""
  return ValueError(f"no usable music in {source}: all {num_files} file(s) "
                    f"were skipped{detail}")


def split_pieces(cfg: DataConfig, entries: list) -> dict[str, list[Piece]]:
  """The entries as Pieces in their splits, each split's pieces held sparse in one
  `SparseFrames` (in name order)."""
  by_split = {s: [] for s in splits_lib.SPLITS}
  for entry in entries:
    split = entry.split or splits_lib.assign_split(entry.name, cfg.valid_fraction,
                                                   cfg.test_fraction)
    by_split[split].append(entry)
  first = entries[0].piece
  layout = encoding.FrameLayout(velocity=first.velocities is not None,
                                lengths=first.lengths is not None, metre=cfg.metre)
  splits = {}
  for split, members in by_split.items():
    members.sort(key=lambda e: e.name)
    signatures = [str(e.piece.stats.get("time_signature", midi_lib.DEFAULT_TIME_SIGNATURE))
                  for e in members]
    store = sparse_lib.SparseFrames.from_sparse(
        [e.piece for e in members], layout, steps_per_quarter=cfg.steps_per_quarter,
        metre=[(sig, int(e.piece.stats.get("start_step", 0)))
               for sig, e in zip(signatures, members)]) if members else None
    splits[split] = [
        Piece(e.name, tempo_bpm=float(e.piece.stats.get("tempo_bpm", midi_lib.DEFAULT_TEMPO_BPM)),
              time_signature=sig, sparse=(store, i))
        for i, (e, sig) in enumerate(zip(members, signatures))]
  return splits


def _per_collection(entries: list, skipped: list) -> dict:
  """{collection (the name's first folder): {'pieces', 'frames', 'skipped'}}."""
  out = {}
  blank = lambda: {"pieces": 0, "frames": 0, "skipped": 0}
  for e in entries:
    row = out.setdefault(e.name.split("/")[0], blank())
    row["pieces"] += 1
    row["frames"] += e.piece.num_frames
  for name, _ in skipped:
    out.setdefault(name.split("/")[0], blank())["skipped"] += 1
  return dict(sorted(out.items()))


def summarize(cfg: DataConfig, info: dict, entries: list, skipped: list,
             splits: dict[str, list[Piece]]) -> dict:
  summary = dict(info)
  summary.update({
      "dataset": cfg.dataset,
      "num_pieces": len(entries),
      "num_skipped": len(skipped),
      "pieces_per_split": {s: len(p) for s, p in splits.items()},
      "frames_per_split": {s: sum(p.num_frames for p in ps) for s, ps in splits.items()},
      "num_frames": sum(e.piece.num_frames for e in entries),
      "num_notes": sum(int(e.piece.rows.shape[0]) for e in entries),
  })
  summary.update({k: sum(int(e.piece.stats.get(k, 0)) for e in entries)
                  for k in ("dropped_out_of_range", "dropped_drums", "unclosed_notes",
                            "pedal_extended_notes")})
  if cfg.dataset == "music21_corpus":  # what each chosen collection gave, under what terms
    summary["collections"] = _per_collection(entries, skipped)
    summary["licence_notes"] = sources.corpus_licence_notes(summary["collections"])
  if cfg.velocity_bins:  # files played at one velocity carry no dynamics to learn
    summary["constant_velocity_files"] = sorted(
        e.name for e in entries
        if e.piece.stats.get("velocity_min") == e.piece.stats.get("velocity_max"))
  return summary


def log_load(cfg: DataConfig, summary: dict, splits: dict, skipped: list,
              cache_hit: bool) -> None:
  logging.info(
      "%s: %d pieces (train %d, valid %d, test %d), %d frames, %d skipped, %s in %.2f s",
      cfg.dataset, summary["num_pieces"], len(splits["train"]), len(splits["valid"]),
      len(splits["test"]), summary["num_frames"], len(skipped),
      "from cache" if cache_hit else f"{summary['num_encoded']} encoded",
      summary["load_seconds"])
  if summary["dropped_out_of_range"] or summary["dropped_drums"]:
    logging.info("dropped %d notes outside pitches %d..%d and %d drum notes",
                 summary["dropped_out_of_range"], encoding.LOWEST_PITCH,
                 encoding.HIGHEST_PITCH, summary["dropped_drums"])
  if summary["unclosed_notes"]:
    logging.info("%d notes were never closed by their files; they end at each file's last "
                 "event", summary["unclosed_notes"])

"""load_dataset: source -> (cached) encoding -> train/valid/test pieces.

MIDI files are encoded on all cores (a process pool working through chunks of
files, largest first) with a progress line every few seconds. Each file's result
(its frames, or the reason it was skipped) is cached with the file's signature,
so a second load reads one .npz, and a changed or added file re-encodes only
that file. Splits are assigned after loading, by piece name, so changing the
split fractions never re-encodes.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time

from absl import logging
import numpy as np

from musicgen_jax import encoding
from musicgen_jax import midi as midi_lib
from musicgen_jax.data import cache as cache_lib
from musicgen_jax.data import sources
from musicgen_jax.data import sparse as sparse_lib
from musicgen_jax.data import splits as splits_lib
from musicgen_jax.data.config import DataConfig

PROGRESS_INTERVAL_S = 5.0  # seconds between progress lines while encoding
_MAX_CHUNK = 8  # files per task sent to a worker process
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


def _encode_chunk(kind: str, files: list[sources.SourceFile], settings: dict):
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


class _Progress:
  """Logs 'files done / total, frames, elapsed, ETA' every few seconds."""

  def __init__(self, total: int, what: str, interval_s: float):
    self.total, self.what, self.interval_s = total, what, interval_s
    self.done = self.frames = 0
    self.start = self.last = time.perf_counter()

  def update(self, results):
    for _, piece, _ in results:
      self.done += 1
      self.frames += piece.num_frames if piece is not None else 0
    self.maybe_log()

  def maybe_log(self, force: bool = False):
    now = time.perf_counter()
    if not force and now - self.last < self.interval_s:
      return
    self.last = now
    elapsed = now - self.start
    eta = (f"{elapsed / self.done * (self.total - self.done):.0f} s"
           if self.done else "?")
    logging.info("encoding %s: %d/%d files, %d frames, %.1f s elapsed, "
                 "ETA %s", self.what, self.done, self.total, self.frames,
                 elapsed, eta)


def encode_files(kind: str, files: list[sources.SourceFile], settings: dict, *,
                 num_workers: int = 0, what: str = "",
                 progress_interval_s: float = PROGRESS_INTERVAL_S):
  """Encodes MIDI source files, in worker processes when num_workers != 1.

  Args:
    kind: 'midi_dir', 'bach_chorales' or 'music21_corpus'.
    files: the files to encode.
    settings: steps_per_quarter, duration_mode, include_drums.
    num_workers: processes; 0 = all cores; 1 = in this process.
    what: how the source is named in progress lines.
    progress_interval_s: seconds between progress lines.

  Returns:
    {name: (SparsePiece or None, skip reason or None)} for every file.
  """
  workers = num_workers or available_cores()
  workers = min(workers, len(files))
  progress = _Progress(len(files), what or kind, progress_interval_s)
  results = {}
  if workers <= 1:
    for f in files:
      chunk = _encode_chunk(kind, [f], settings)
      progress.update(chunk)
      results.update({name: (piece, reason) for name, piece, reason in chunk})
  else:
    # Largest files first, in small chunks, so no worker is left with a long
    # tail; chunks amortise the inter-process overhead on many small files.
    ordered = sorted(files, key=lambda f: -f.size)
    chunk_size = max(1, min(_MAX_CHUNK, math.ceil(len(files) / (workers * 16))))
    chunks = [ordered[i:i + chunk_size]
              for i in range(0, len(ordered), chunk_size)]
    logging.info("encoding %d files on %d processes (%s)", len(files), workers,
                 start_method())
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(start_method()))
    try:
      pending = {pool.submit(_encode_chunk, kind, chunk, settings)
                 for chunk in chunks}
      while pending:
        done, pending = concurrent.futures.wait(
            pending, timeout=progress_interval_s,
            return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          chunk = future.result()
          progress.update(chunk)
          results.update({name: (piece, reason)
                          for name, piece, reason in chunk})
        progress.maybe_log()
    except BaseException:
      # An error or an interrupt: drop the queued chunks instead of waiting.
      pool.shutdown(wait=False, cancel_futures=True)
      raise
    pool.shutdown(wait=True)
  progress.maybe_log(force=True)
  return results


def _warn_skipped(skipped: list[tuple[str, str]], source: str):
  for name, reason in skipped[:_MAX_LISTED_SKIPS]:
    logging.warning("skipped %s: %s", name, reason)
  if len(skipped) > _MAX_LISTED_SKIPS:
    logging.warning("... and %d more skipped files (see Dataset.skipped)",
                    len(skipped) - _MAX_LISTED_SKIPS)
  if skipped:
    logging.warning("%d file(s) of %s skipped", len(skipped), source)


def _no_music_error(source: str, num_files: int,
                    skipped: list[tuple[str, str]]) -> ValueError:
  detail = f"; first: {skipped[0][1]}" if skipped else ""
  return ValueError(f"no usable music in {source}: all {num_files} file(s) "
                    f"were skipped{detail}")


def _list_source(cfg: DataConfig) -> tuple[list[sources.SourceFile], str]:
  """All the source's files (sorted) and where they come from."""
  if cfg.dataset == "midi_dir":
    return (sources.list_midi_files(cfg.data_dir),
            os.path.abspath(os.path.expanduser(cfg.data_dir)))
  if cfg.dataset == "music21_corpus":
    chosen = cfg.corpus or "all but " + ", ".join(sources.CORPUS_DEFAULT_EXCLUDED)
    return sources.list_music21_corpus(cfg.corpus), f"music21 corpus ({chosen})"
  return sources.list_bach_chorales(), "music21 corpus (Bach chorales)"


class _CacheIndex:
  """The cached entries of a source, usable while a file's signature is unchanged."""

  def __init__(self, cached: cache_lib.CacheContents | None):
    self.by_name = {}
    if cached is not None:
      self.by_name.update({s.name: s for s in cached.skipped})
      self.by_name.update({p.name: p for p in cached.pieces})

  def get(self, f: sources.SourceFile):
    entry = self.by_name.get(f.name)
    if entry is not None and entry.signature == cache_lib.jsonable_signature(f.signature):
      return entry
    return None


def _encode_into(entries: dict, to_encode: list, cfg: DataConfig, location: str,
                 progress_interval_s: float) -> float:
  """Encodes the files not in the cache into `entries`; returns the seconds it took."""
  if not to_encode:
    return 0.0
  logging.info("%s: %d files to encode (%d cached)", location, len(to_encode), len(entries))
  start = time.perf_counter()
  results = encode_files(cfg.dataset, to_encode, cfg.encoding_settings,
                         num_workers=cfg.num_workers, what=location,
                         progress_interval_s=progress_interval_s)
  for f in to_encode:
    piece, reason = results[f.name]
    entries[f.name] = (cache_lib.CachedSkip(f.name, f.signature, reason) if piece is None
                       else cache_lib.CachedPiece(f.name, f.signature, None, piece))
  # A skipped file is warned about once, when it is encoded; loads from the cache count it.
  _warn_skipped([(f.name, results[f.name][1]) for f in to_encode if results[f.name][0] is None],
                location)
  return time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class _MidiSource:
  listed: list  # every file of the source, sorted
  files: list  # those used (--max_files)
  location: str
  key: str  # the cache's
  path: str  # the cache file's


def _midi_source(cfg: DataConfig) -> _MidiSource:
  listed, location = _list_source(cfg)
  # The parser in use is part of the key: on malformed files the two may differ.
  key = cache_lib.cache_key(cfg.dataset, location, dict(
      cfg.encoding_settings, parser=midi_lib.reader_in_use(cfg.midi_reader)))
  return _MidiSource(listed, listed[:cfg.max_files] if cfg.max_files else listed, location,
                     key, cache_lib.cache_path(cfg.cache_dir, cfg.dataset, key))


def _load_midi_source(cfg: DataConfig, progress_interval_s: float,
                      source: _MidiSource | None = None):
  """midi_dir / bach_chorales / music21_corpus: list files, reuse cached ones, encode the
  rest."""
  source = source or _midi_source(cfg)
  listed, files, location, key, path = (source.listed, source.files, source.location,
                                        source.key, source.path)
  index = _CacheIndex(cache_lib.read_cache(path, key))
  entries = {f.name: index.get(f) for f in files if index.get(f) is not None}
  to_encode = [f for f in files if f.name not in entries]
  # Cached files outside max_files stay in the cache; removed or changed files leave it.
  kept_outside = [e for e in map(index.get, listed[len(files):]) if e is not None]
  stale = len(index.by_name) - len(entries) - len(kept_outside)
  encode_seconds = _encode_into(entries, to_encode, cfg, location, progress_interval_s)
  ordered = [entries[f.name] for f in files]
  is_piece = lambda e: isinstance(e, cache_lib.CachedPiece)
  pieces = [e for e in ordered if is_piece(e)]
  skips = [e for e in ordered if not is_piece(e)]
  if to_encode or stale:
    cache_lib.write_cache(path, key, pieces + [e for e in kept_outside if is_piece(e)],
                          skips + [e for e in kept_outside if not is_piece(e)],
                          {"dataset": cfg.dataset, "location": location,
                           "settings": cfg.encoding_settings})
    logging.info("wrote cache %s", path)
  info = {"source": location, "num_files": len(files), "num_encoded": len(to_encode),
          "num_cached": len(files) - len(to_encode), "cache_hit": not to_encode,
          "cache_path": path, "encode_seconds": encode_seconds}
  return pieces, [(s.name, s.reason) for s in skips], info


def _load_json_source(cfg: DataConfig):
  """json: the whole file is one cache entry keyed by its SHA-256."""
  location = os.path.abspath(os.path.expanduser(cfg.data_path))
  if not os.path.isfile(location):
    raise FileNotFoundError(
        f"--data_path {cfg.data_path!r} is not a file: point --data_path at a "
        "benchmark .json file")
  signature = [cache_lib.CACHE_FORMAT, sources.file_sha256(location)]
  key = cache_lib.cache_key(cfg.dataset, location, {})
  path = cache_lib.cache_path(cfg.cache_dir, cfg.dataset, key)
  cached = cache_lib.read_cache(path, key)
  encode_seconds = 0.0
  if cached is not None and cached.meta.get("source_signature") == signature:
    pieces, skips = cached.pieces, cached.skipped
    hit = True
  else:
    start = time.perf_counter()
    read, skipped = sources.read_json_benchmark(location)
    pieces = [cache_lib.CachedPiece(name, [], split, piece)
              for split, name, piece in read]
    skips = [cache_lib.CachedSkip(name, [], reason) for name, reason in skipped]
    _warn_skipped(skipped, location)
    encode_seconds = time.perf_counter() - start
    cache_lib.write_cache(path, key, pieces, skips,
                          {"dataset": cfg.dataset, "location": location,
                           "source_signature": signature})
    logging.info("wrote cache %s", path)
    hit = False
  num_files = len(pieces) + len(skips)
  info = {
      "source": location, "num_files": num_files,
      "num_encoded": 0 if hit else num_files,
      "num_cached": num_files if hit else 0, "cache_hit": hit,
      "cache_path": path, "encode_seconds": encode_seconds,
  }
  return pieces, [(s.name, s.reason) for s in skips], info


def encode_file(cfg: DataConfig, source) -> tuple[np.ndarray, encoding.EncodeStats]:
  """One MIDI file (a path or bytes) as a run with these settings reads it: its frames
  encoded with the run's settings, with their metre columns when the run has metre."""
  frames, stats = encoding.encode_midi(source, **cfg.encoding_settings)
  if cfg.metre:
    frames = encoding.add_metre(frames, stats.time_signature, cfg.steps_per_quarter,
                                stats.start_step)
  return frames, stats


def _split_pieces(cfg: DataConfig, entries: list) -> dict[str, list[Piece]]:
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


def _summary(cfg: DataConfig, info: dict, entries: list, skipped: list,
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


def load_dataset(cfg: DataConfig, *, progress_interval_s: float = PROGRESS_INTERVAL_S,
                 train_shards=None) -> Dataset:
  """Loads (encoding and caching as needed) the dataset that cfg names.

  With cfg.shard_files the corpus is encoded into shards and read from them (see
  `shards`); `train_shards` (a predicate on the shard number) then limits the train split
  to those shards' pieces, and is ignored otherwise.

  Returns:
    A Dataset: pieces in 'train'/'valid'/'test' (MIDI sources split by a hash
    of each file's relative path; json by its given splits), skipped files with
    reasons, and a summary.

  Raises:
    ValueError / FileNotFoundError / ImportError: with a message saying what
    to change (no MIDI files found, no usable music, music21 missing, ...).
  """
  start = time.perf_counter()
  source = None
  if cfg.dataset == "json":
    entries, skipped, info = _load_json_source(cfg)
  else:
    source = _midi_source(cfg)
    if cfg.shard_files:
      from musicgen_jax.data import shards  # pylint: disable=g-import-not-at-top
      return shards.load_sharded(cfg, source, start, progress_interval_s, train_shards)
    mapped = _open_mapped(cfg, source, start)
    if mapped is not None:
      return mapped
    entries, skipped, info = _load_midi_source(cfg, progress_interval_s, source)
  if not entries:
    raise _no_music_error(info["source"], info["num_files"], skipped)
  splits = _split_pieces(cfg, entries)
  for split, pieces in splits.items():
    if not pieces:
      logging.warning("the %s split of %s is empty", split, info["source"])
  summary = _summary(cfg, info, entries, skipped, splits)
  del entries  # the pieces live on in the splits' sparse stores
  if source is not None:
    splits = _write_mapped(cfg, source, splits, skipped, summary)
  summary["load_seconds"] = time.perf_counter() - start
  _log_load(cfg, summary, splits, skipped, info["cache_hit"])
  return Dataset(splits=splits, skipped=skipped, summary=summary, config=cfg)


MAPPED_FORMAT = 1
MAPPED_META = "dataset.json"


def _mapped_folder(cfg: DataConfig, source: _MidiSource) -> str | None:
  """Where the splits of this cache, these files and these split settings are kept as
  memory-mapped stores; None while there is no cache file."""
  try:
    stat = os.stat(source.path)
  except OSError:
    return None
  document = json.dumps({
      "format": MAPPED_FORMAT, "key": source.key, "cache": [stat.st_size, stat.st_mtime_ns],
      "files": [[f.name, cache_lib.jsonable_signature(f.signature)] for f in source.files],
      "valid_fraction": cfg.valid_fraction, "test_fraction": cfg.test_fraction,
      "metre": cfg.metre, "steps_per_quarter": cfg.steps_per_quarter}, sort_keys=True)
  digest = hashlib.sha256(document.encode("utf-8")).hexdigest()[:16]
  return source.path[:-len(".npz")] + f".mapped-{digest}"


def _open_splits(folder: str, described: dict) -> dict[str, list[Piece]]:
  splits = {}
  for split in splits_lib.SPLITS:
    rows = described["splits"][split]
    store = sparse_lib.SparseFrames.open(os.path.join(folder, split)) if rows else None
    splits[split] = [Piece(name, tempo_bpm=tempo, time_signature=signature, sparse=(store, i))
                     for i, (name, tempo, signature) in enumerate(rows)]
  return splits


def _write_mapped(cfg: DataConfig, source: _MidiSource, splits: dict, skipped: list,
                  summary: dict) -> dict[str, list[Piece]]:
  """Writes the splits' stores beside the cache and returns the splits read back from them
  (memory-mapped); the splits as they are where the folder cannot be written."""
  folder = _mapped_folder(cfg, source)
  if folder is None:
    return splits
  tmp = f"{folder}.tmp-{os.getpid()}"
  described = {"format": MAPPED_FORMAT, "skipped": [list(s) for s in skipped],
               "summary": summary,
               "splits": {split: [[p.name, p.tempo_bpm, p.time_signature] for p in pieces]
                          for split, pieces in splits.items()}}
  try:
    shutil.rmtree(tmp, ignore_errors=True)
    for split, pieces in splits.items():
      if pieces:
        pieces[0].sparse[0].save(os.path.join(tmp, split))
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, MAPPED_META), "w", encoding="utf-8") as f:
      json.dump(described, f)
    try:
      os.rename(tmp, folder)
    except OSError:  # another process wrote the same splits first: keep theirs
      if not os.path.isfile(os.path.join(folder, MAPPED_META)):
        raise
      shutil.rmtree(tmp, ignore_errors=True)
  except (OSError, TypeError, ValueError) as e:
    shutil.rmtree(tmp, ignore_errors=True)
    logging.warning("cannot keep the dataset's splits beside its cache (%s); holding them in "
                    "memory", e)
    return splits
  except BaseException:  # interrupted: no half-written folder stays behind
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  prefix = os.path.basename(source.path[:-len(".npz")]) + ".mapped-"
  parent = os.path.dirname(folder)
  for name in os.listdir(parent):  # splits of earlier versions of this cache
    if (name.startswith(prefix) and ".tmp-" not in name and
        os.path.join(parent, name) != folder):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
  try:
    return _open_splits(folder, described)
  except OSError as e:  # removed under us by a process with a newer cache
    logging.warning("cannot open the dataset's mapped splits (%s); holding them in memory", e)
    return splits


def _open_mapped(cfg: DataConfig, source: _MidiSource, start: float) -> Dataset | None:
  """The dataset from its memory-mapped splits, when they are current (the same cache file,
  files and split settings); None otherwise (then it is loaded and they are written)."""
  folder = _mapped_folder(cfg, source)
  if folder is None or not os.path.isfile(os.path.join(folder, MAPPED_META)):
    return None
  try:
    with open(os.path.join(folder, MAPPED_META), encoding="utf-8") as f:
      described = json.load(f)
    if described.get("format") != MAPPED_FORMAT:
      return None
    splits = _open_splits(folder, described)
  except (OSError, ValueError, KeyError, TypeError) as e:
    logging.warning("the dataset's mapped splits in %s are unreadable (%s); reading the cache",
                    folder, e)
    return None
  skipped = [tuple(s) for s in described["skipped"]]
  summary = dict(described["summary"], cache_hit=True, num_encoded=0, encode_seconds=0.0,
                 num_cached=len(source.files), mapped=folder)
  summary["load_seconds"] = time.perf_counter() - start
  _log_load(cfg, summary, splits, skipped, True)
  return Dataset(splits=splits, skipped=skipped, summary=summary, config=cfg)


def _log_load(cfg: DataConfig, summary: dict, splits: dict, skipped: list,
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

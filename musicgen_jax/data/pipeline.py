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
import time

from absl import logging
import numpy as np

from musicgen_jax import encoding
from musicgen_jax import midi as midi_lib
from musicgen_jax.data import cache as cache_lib
from musicgen_jax.data import encoded
from musicgen_jax.data import shards
from musicgen_jax.data import sources
from musicgen_jax.data import sparse as sparse_lib
from musicgen_jax.data import splits as splits_lib
from musicgen_jax.data.config import DataConfig
# Re-exported: where loaders and programs have always found them.
from musicgen_jax.data.encoded import Dataset, Piece, available_cores, start_method  # pylint: disable=unused-import

PROGRESS_INTERVAL_S = 5.0  # seconds between progress lines while encoding
_MAX_CHUNK = 8  # files per task sent to a worker process


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
  workers = num_workers or encoded.available_cores()
  workers = min(workers, len(files))
  progress = _Progress(len(files), what or kind, progress_interval_s)
  results = {}
  if workers <= 1:
    for f in files:
      chunk = encoded.encode_chunk(kind, [f], settings)
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
                 encoded.start_method())
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(encoded.start_method()))
    try:
      pending = {pool.submit(encoded.encode_chunk, kind, chunk, settings)
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
  encoded.warn_skipped([(f.name, results[f.name][1]) for f in to_encode if results[f.name][0] is None],
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
    encoded.warn_skipped(skipped, location)
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
      return shards.load_sharded(cfg, source, start, progress_interval_s, train_shards)
    mapped = _open_mapped(cfg, source, start)
    if mapped is not None:
      return mapped
    entries, skipped, info = _load_midi_source(cfg, progress_interval_s, source)
  if not entries:
    raise encoded.no_music_error(info["source"], info["num_files"], skipped)
  splits = encoded.split_pieces(cfg, entries)
  for split, pieces in splits.items():
    if not pieces:
      logging.warning("the %s split of %s is empty", split, info["source"])
  summary = encoded.summarize(cfg, info, entries, skipped, splits)
  del entries  # the pieces live on in the splits' sparse stores
  if source is not None:
    splits = _write_mapped(cfg, source, splits, skipped, summary)
  summary["load_seconds"] = time.perf_counter() - start
  encoded.log_load(cfg, summary, splits, skipped, info["cache_hit"])
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
  encoded.log_load(cfg, summary, splits, skipped, True)
  return Dataset(splits=splits, skipped=skipped, summary=summary, config=cfg)


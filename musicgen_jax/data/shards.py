"""Corpora larger than memory: the encoded corpus kept on disk in shards, memory-mapped.

With `DataConfig.shard_files = N` a MIDI source's files (sorted by name) are cut into
shards of N files. Each shard is encoded by one worker process and written as its own
folder of memory-mapped sparse stores, one per split, beside where the cache would be:

  <cache_dir>/<dataset>-<key>.shards/
    shard-00000-<digest>/  train/ valid/ test/ (`SparseFrames.save`), shard.json
    shard-00001-<digest>/  ...

A shard's digest names its files, their signatures and the split settings, so a changed
file re-encodes its own shard only, and an interrupted `prepare` resumes with the shards
it finished (each is written to a temporary folder and renamed when complete). No process
ever holds more than a shard's pieces in memory, and a load opens each shard's stores
memory-mapped: the splits are those of the one-file cache (same pieces, same order), read
through `sparse.ShardedFrames`. A process that trains on a share of the corpus opens only
the training stores of its shards (`load_sharded(..., train_shards=...)`).
"""

from __future__ import annotations

import concurrent.futures
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
from musicgen_jax.data import cache as cache_lib
from musicgen_jax.data import encoded
from musicgen_jax.data import sources
from musicgen_jax.data import sparse as sparse_lib
from musicgen_jax.data import splits as splits_lib
from musicgen_jax.data.config import DataConfig

SHARD_FORMAT = 1
SHARD_META = "shard.json"
# Summary fields that add up over shards.
_SUMMED = ("num_pieces", "num_skipped", "num_frames", "num_notes", "dropped_out_of_range",
           "dropped_drums", "unclosed_notes", "pedal_extended_notes")


def shards_folder(source) -> str:
  return source.path[:-len(".npz")] + ".shards"


def plan(cfg: DataConfig, source) -> list[tuple[str, list]]:
  """(folder name, files) per shard: the source's files in order, shard_files at a time."""
  per = cfg.shard_files
  out = []
  for index in range(math.ceil(len(source.files) / per)):
    files = source.files[index * per:(index + 1) * per]
    document = json.dumps({
        "format": SHARD_FORMAT, "key": source.key,
        "files": [[f.name, cache_lib.jsonable_signature(f.signature)] for f in files],
        "valid_fraction": cfg.valid_fraction, "test_fraction": cfg.test_fraction,
        "metre": cfg.metre}, sort_keys=True)
    digest = hashlib.sha256(document.encode("utf-8")).hexdigest()[:12]
    out.append((f"shard-{index:05d}-{digest}", files))
  return out


def write_shard(cfg: DataConfig, files: list, folder: str) -> dict:
  """Encodes one shard's files and writes its stores to `folder`; returns its shard.json.

  Runs in a worker process: only this shard's pieces are ever in its memory.
  """
  entries, skipped = [], []
  for name, piece, reason in encoded.encode_chunk(cfg.dataset, files, cfg.encoding_settings):
    if piece is None:
      skipped.append((name, reason))
    else:
      entries.append(cache_lib.CachedPiece(name, [], None, piece))
  splits = (encoded.split_pieces(cfg, entries) if entries
            else {s: [] for s in splits_lib.SPLITS})
  summary = encoded.summarize(cfg, {}, entries, skipped, splits)
  described = {"format": SHARD_FORMAT, "num_files": len(files),
               "skipped": [list(s) for s in skipped], "summary": summary,
               "splits": {split: [[p.name, p.tempo_bpm, p.time_signature] for p in pieces]
                          for split, pieces in splits.items()}}
  tmp = f"{folder}.tmp-{os.getpid()}"
  try:
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for split, pieces in splits.items():
      if pieces:
        pieces[0].sparse[0].save(os.path.join(tmp, split))
    with open(os.path.join(tmp, SHARD_META), "w", encoding="utf-8") as f:
      json.dump(described, f)
    try:
      os.rename(tmp, folder)
    except OSError:  # another process wrote this shard first: keep theirs
      if not os.path.isfile(os.path.join(folder, SHARD_META)):
        raise
      shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:  # an error or an interrupt: no half-written shard stays behind
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return described


def _read_meta(folder: str) -> dict | None:
  try:
    with open(os.path.join(folder, SHARD_META), encoding="utf-8") as f:
      described = json.load(f)
  except (OSError, ValueError):
    return None
  return described if described.get("format") == SHARD_FORMAT else None


def _tidy(root: str, wanted: set[str]) -> None:
  """Removes shards of earlier versions of the corpus, and temporary folders of processes
  no longer running."""
  for name in os.listdir(root):
    path = os.path.join(root, name)
    if ".tmp-" in name:
      pid = name.rsplit(".tmp-", 1)[1]
      if pid.isdigit() and _running(int(pid)):
        continue
    elif name in wanted or not name.startswith("shard-"):
      continue
    shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class _Progress:
  """'shards done / total, files, frames, elapsed, ETA' every few seconds; the ETA from the
  files encoded so far in this run."""

  def __init__(self, shards: int, files: int, interval_s: float):
    self.shards, self.files, self.interval_s = shards, files, interval_s
    self.done_shards = self.done_files = self.frames = 0
    self.start = self.last = time.perf_counter()
    self.etas = []  # (elapsed, eta, files done) of each line, for the log and tests

  def update(self, described: dict) -> None:
    self.done_shards += 1
    self.done_files += described["num_files"]
    self.frames += described["summary"]["num_frames"]
    self.maybe_log()

  def maybe_log(self, force: bool = False) -> None:
    now = time.perf_counter()
    if (now - self.last < self.interval_s and not force) or (force and self.etas and
                                                             self.etas[-1][2] == self.done_files):
      return
    self.last = now
    elapsed = now - self.start
    eta = (elapsed / self.done_files * (self.files - self.done_files)
           if self.done_files else None)
    self.etas.append((elapsed, eta, self.done_files))
    logging.info("encoding shards: %d/%d shards, %d/%d files, %d frames, %.1f s elapsed, "
                 "ETA %s", self.done_shards, self.shards, self.done_files, self.files,
                 self.frames, elapsed, "?" if eta is None else f"{eta:.0f} s")


def _encode_missing(cfg: DataConfig, root: str, missing: list[tuple[str, list]],
                    interval_s: float) -> dict[str, dict]:
  """Encodes and writes the missing shards, a worker process per shard at a time."""
  progress = _Progress(len(missing), sum(len(f) for _, f in missing), interval_s)
  workers = min(cfg.num_workers or encoded.available_cores(), len(missing))
  logging.info("encoding %d shards (%d files) on %d process(es) into %s", len(missing),
               progress.files, workers, root)
  written = {}
  if workers <= 1:
    for name, files in missing:
      written[name] = write_shard(cfg, files, os.path.join(root, name))
      progress.update(written[name])
  else:
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(encoded.start_method()))
    try:
      futures = {pool.submit(write_shard, cfg, files, os.path.join(root, name)): name
                 for name, files in missing}
      pending = set(futures)
      while pending:
        done, pending = concurrent.futures.wait(
            pending, timeout=interval_s, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          written[futures[future]] = future.result()
          progress.update(written[futures[future]])
        progress.maybe_log()
    except BaseException:
      pool.shutdown(wait=False, cancel_futures=True)
      raise
    pool.shutdown(wait=True)
  progress.maybe_log(force=True)
  return written


def _allow_open_files(needed: int) -> None:
  """Each store keeps its array files open (`sparse.OnDisk`): raises this process's limit on
  open files to its hard limit where the shards need more than the soft one allows."""
  try:
    import resource  # pylint: disable=g-import-not-at-top
  except ImportError:  # not a POSIX system: nothing to raise
    return
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  wanted = needed + 1024  # and the files everything else opens
  if soft != resource.RLIM_INFINITY and soft < wanted:
    limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit < wanted:
      raise ValueError(f"the shards' stores need {needed} open files and this process may "
                       f"open {hard}: raise --shard_files (fewer, larger shards) or the limit "
                       "(ulimit -n)")
    logging.info("open-file limit raised from %d to %d for the shards' stores", soft, limit)


def _merge(summaries: list[dict]) -> dict:
  out = {k: sum(int(s.get(k, 0)) for s in summaries) for k in _SUMMED}
  for k in ("pieces_per_split", "frames_per_split"):
    out[k] = {split: sum(s[k][split] for s in summaries) for split in splits_lib.SPLITS}
  if any("collections" in s for s in summaries):
    collections = {}
    for s in summaries:
      for name, row in s.get("collections", {}).items():
        into = collections.setdefault(name, {"pieces": 0, "frames": 0, "skipped": 0})
        for k in into:
          into[k] += row[k]
    out["collections"] = dict(sorted(collections.items()))
  if any("constant_velocity_files" in s for s in summaries):
    out["constant_velocity_files"] = sorted(
        n for s in summaries for n in s.get("constant_velocity_files", []))
  return out


def _train_pitches(root: str, planned: list, described: dict) -> list[int]:
  """The note indices used in the whole train split, from each shard's store summary (a few
  bytes; the stores themselves are not opened)."""
  used = np.zeros(encoding.NUM_NOTES, bool)
  for name, _ in planned:
    if described[name]["splits"]["train"]:
      with np.load(os.path.join(root, name, "train", sparse_lib.SUMMARY_FILE)) as summary:
        used |= summary["pitches_used"]
  return np.flatnonzero(used).tolist()


def load_sharded(cfg: DataConfig, source, start: float, interval_s: float,
                 train_shards=None) -> encoded.Dataset:
  """The dataset from its shards, encoding those missing first.

  Args:
    train_shards: a predicate on the shard number: the train split holds only those
      shards' pieces (the others' training stores are never opened); None = all.
  """
  root = shards_folder(source)
  os.makedirs(root, exist_ok=True)
  planned = plan(cfg, source)
  described = {name: _read_meta(os.path.join(root, name)) for name, _ in planned}
  missing = [(name, files) for name, files in planned if described[name] is None]
  _tidy(root, {name for name, _ in planned})
  encode_start = time.perf_counter()
  if missing:
    logging.info("%s: %d of %d shards to encode", source.location, len(missing), len(planned))
    described.update(_encode_missing(cfg, root, missing, interval_s))
    encoded.warn_skipped([tuple(s) for name, _ in missing
                            for s in described[name]["skipped"]], source.location)
  encode_seconds = time.perf_counter() - encode_start if missing else 0.0
  _allow_open_files(sum(len(sparse_lib.ARRAYS) for name, _ in planned
                         for rows in described[name]["splits"].values() if rows))
  splits = {s: [] for s in splits_lib.SPLITS}
  shard_of_train = []
  for number, (name, _) in enumerate(planned):
    for split in splits_lib.SPLITS:
      rows = described[name]["splits"][split]
      if not rows or (split == "train" and train_shards is not None and
                      not train_shards(number)):
        continue
      store = sparse_lib.SparseFrames.open(os.path.join(root, name, split))
      splits[split] += [encoded.Piece(n, tempo_bpm=tempo, time_signature=signature,
                                       sparse=(store, i))
                        for i, (n, tempo, signature) in enumerate(rows)]
      if split == "train":
        shard_of_train += [number] * len(rows)
  skipped = [tuple(s) for name, _ in planned for s in described[name]["skipped"]]
  num_encoded = sum(len(files) for _, files in missing)
  summary = _merge([described[name]["summary"] for name, _ in planned])
  summary.update({
      "source": source.location, "dataset": cfg.dataset, "num_files": len(source.files),
      "num_encoded": num_encoded, "num_cached": len(source.files) - num_encoded,
      "cache_hit": not missing, "cache_path": root, "encode_seconds": encode_seconds,
      "num_shards": len(planned), "mapped": root,
      "train_pitches_used": _train_pitches(root, planned, described)})
  if cfg.dataset == "music21_corpus":
    summary["licence_notes"] = sources.corpus_licence_notes(summary["collections"])
  if summary["num_pieces"] == 0:
    raise encoded.no_music_error(source.location, len(source.files), skipped)
  summary["load_seconds"] = time.perf_counter() - start
  encoded.log_load(cfg, summary, splits, skipped, not missing)
  return encoded.Dataset(splits=splits, skipped=skipped, summary=summary, config=cfg,
                          shard_of_train=shard_of_train)

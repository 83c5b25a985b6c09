"""The encoded-dataset cache: one numpy .npz per (source, encoding settings).

The file holds the pieces sparsely (note onsets as frame/pitch coordinates plus
one duration per frame) and a JSON document (names, per-file signatures, stats,
skipped files) stored as UTF-8 bytes. It is loaded with allow_pickle=False and
written atomically (a temporary file, then os.replace), so a killed run never
leaves a half-written cache; an unreadable cache is rebuilt with a warning.
"""

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile

from absl import logging
import numpy as np

from musicgen_jax.data import sources

# Bump when the file layout or the meaning of its contents changes.
CACHE_FORMAT = 4  # 2: per-piece tempo and time signature; 3: velocities; 4: note lengths
_CODEC_MODULES = ("encoding.py", "midi.py", "data/sources.py")  # sources: music21 -> MIDI


def codec_fingerprint() -> str:
  """A hash of the codec's source, so a changed codec re-encodes."""
  package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for module in _CODEC_MODULES:
    path = os.path.join(package_dir, module)
    digest.update(module.encode())
    if os.path.exists(path):
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def cache_key(dataset: str, location: str, settings: dict) -> str:
  """The identity of a cache file: source location, settings, codec, format."""
  document = json.dumps(
      {"format": CACHE_FORMAT, "dataset": dataset, "location": location,
       "settings": settings, "codec": codec_fingerprint()}, sort_keys=True)
  return hashlib.sha256(document.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str, dataset: str, key: str) -> str:
  return os.path.join(os.path.expanduser(cache_dir), f"{dataset}-{key[:20]}.npz")


def jsonable_signature(signature) -> list:
  """Signatures compare as JSON lists (how they are stored)."""
  return json.loads(json.dumps(list(signature)))


@dataclasses.dataclass
class CachedPiece:
  name: str
  signature: list
  split: str | None  # the given split (json); None for hash-assigned splits
  piece: sources.SparsePiece


@dataclasses.dataclass
class CachedSkip:
  name: str
  signature: list
  reason: str


@dataclasses.dataclass
class CacheContents:
  pieces: list[CachedPiece]
  skipped: list[CachedSkip]
  meta: dict


def write_cache(path: str, key: str, pieces: list[CachedPiece],
                skipped: list[CachedSkip], extra_meta: dict | None = None):
  """Writes the cache file atomically (tmp file in the same folder + replace)."""
  frame_lengths = [p.piece.num_frames for p in pieces]
  note_lengths = [p.piece.rows.shape[0] for p in pieces]
  frame_offsets = np.concatenate([[0], np.cumsum(frame_lengths)]).astype(np.int64)
  note_offsets = np.concatenate([[0], np.cumsum(note_lengths)]).astype(np.int64)

  def cat(arrays, dtype):
    return (np.concatenate(arrays).astype(dtype, copy=False) if arrays
            else np.zeros(0, dtype))

  meta = dict(extra_meta or {})
  meta.update({
      "format": CACHE_FORMAT,
      "key": key,
      "pieces": [{"name": p.name, "signature": jsonable_signature(p.signature),
                  "split": p.split, "stats": p.piece.stats} for p in pieces],
      "skipped": [{"name": s.name, "signature": jsonable_signature(s.signature),
                   "reason": s.reason} for s in skipped],
  })
  arrays = {
      "frame_offsets": frame_offsets,
      "note_offsets": note_offsets,
      "durations": cat([p.piece.durations for p in pieces], np.float32),
      "velocities": cat([p.piece.velocities for p in pieces
                         if p.piece.velocities is not None], np.float32),
      "lengths": cat([p.piece.lengths for p in pieces if p.piece.lengths is not None],
                     np.float32),
      "rows": cat([p.piece.rows for p in pieces], np.int32),
      "pitches": cat([p.piece.pitches for p in pieces], np.uint8),
      "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
  }
  folder = os.path.dirname(path) or "."
  os.makedirs(folder, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(
      dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.unlink(tmp_path)
    raise


def read_cache(path: str, key: str) -> CacheContents | None:
  """The cache's contents, or None if it is missing, stale or unreadable.

  An unreadable (truncated, corrupt, wrong-format) file gets a warning; the
  caller re-encodes and overwrites it.
  """
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(z["meta"].tobytes().decode("utf-8"))
      if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
        logging.info("cache %s is from other settings or an older format; "
                     "re-encoding", path)
        return None
      frame_offsets = z["frame_offsets"]
      note_offsets = z["note_offsets"]
      durations = z["durations"]
      velocities = z["velocities"] if "velocities" in z.files else np.zeros(0, np.float32)
      lengths = z["lengths"] if "lengths" in z.files else np.zeros(0, np.float32)
      rows = z["rows"]
      pitches = z["pitches"]
    num_pieces = len(meta["pieces"])
    if (frame_offsets.shape != (num_pieces + 1,) or
        note_offsets.shape != (num_pieces + 1,) or
        frame_offsets[-1] != durations.shape[0] or
        note_offsets[-1] != rows.shape[0] or rows.shape != pitches.shape or
        lengths.size not in (0, rows.shape[0])):
      raise ValueError("array sizes do not match the piece list")
    pieces = []
    for i, entry in enumerate(meta["pieces"]):
      f0, f1 = frame_offsets[i], frame_offsets[i + 1]
      n0, n1 = note_offsets[i], note_offsets[i + 1]
      piece = sources.SparsePiece(rows=rows[n0:n1], pitches=pitches[n0:n1],
                                  durations=durations[f0:f1],
                                  velocities=(velocities[f0:f1] if velocities.size
                                              else None),
                                  lengths=lengths[n0:n1] if lengths.size else None,
                                  stats=entry["stats"])
      pieces.append(CachedPiece(entry["name"], entry["signature"],
                                entry["split"], piece))
    skipped = [CachedSkip(s["name"], s["signature"], s["reason"])
               for s in meta["skipped"]]
  except (OSError, ValueError, KeyError, TypeError, EOFError,
          zipfile.BadZipFile, UnicodeDecodeError) as e:
    logging.warning("cache file %s is unreadable (%s: %s); re-encoding and "
                    "rewriting it", path, type(e).__name__, e)
    return None
  return CacheContents(pieces, skipped, meta)

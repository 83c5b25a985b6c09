"""Where the music comes from: a MIDI folder, music21's corpus (its Bach chorales, or the
rest chosen by collection), or JSON.

MIDI sources (midi_dir, bach_chorales, music21_corpus) are lists of `SourceFile`s, each
encoded
on its own (possibly in another process) by `encode_source_file`, which returns
a `SparsePiece` (note coordinates + durations) or the reason it was skipped.
The JSON benchmark source is converted in one go by `read_json_benchmark`.
"""

import copy
import dataclasses
import hashlib
import io
import json
import os

from absl import logging
import mido
import numpy as np

from musicgen_jax import encoding
from musicgen_jax.data import splits as splits_lib

MIDI_EXTENSIONS = (".mid", ".midi")
# Score files of music21's Bach corpus; its .rntxt files are Roman-numeral
# analyses, not music, and are left out.
CHORALE_EXTENSIONS = (".mxl", ".xml", ".musicxml", ".krn")
CORPUS_INSTALL_HINT = (
    "install the corpus extra: pip install 'musicgen-jax[corpus]' (or pip "
    "install music21)")


@dataclasses.dataclass(frozen=True)
class SourceFile:
  """One file of a MIDI source.

  Attributes:
    name: the path relative to the source root, '/'-separated; the piece's name
      and the key of its split.
    path: the absolute path read.
    signature: identity for the cache (size, mtime_ns, ...); a file whose
      signature changes is re-encoded.
    size: bytes, to schedule large files first.
    number: for a file of many tunes (ABC), the tune's X: number; None = the whole file.
  """
  name: str
  path: str
  signature: tuple
  size: int = 0
  number: int | None = None


@dataclasses.dataclass
class SparsePiece:
  """An encoded piece stored sparsely: frame k has notes at pitches[rows == k].

  Attributes:
    rows: <int32>[num_notes] frame index of each note onset.
    pitches: <uint8>[num_notes] note index 0..105 (MIDI pitch - 21).
    durations: <float32>[num_frames] frame durations in quarter notes.
    velocities: <float32>[num_frames] the onsets' mean velocities (frames with
      dynamics), or None.
    lengths: <float32>[num_notes] each note's length in quarter notes (frames with note
      lengths), or None.
    stats: num_notes, num_frames, dropped_out_of_range, dropped_drums, unclosed_notes, ...
  """
  rows: np.ndarray
  pitches: np.ndarray
  durations: np.ndarray
  stats: dict
  velocities: np.ndarray | None = None
  lengths: np.ndarray | None = None

  @property
  def num_frames(self) -> int:
    return int(self.durations.shape[0])

  @classmethod
  def from_frames(cls, frames: np.ndarray, stats: dict) -> "SparsePiece":
    """Takes <float32>[T, F] frames (notes 0/1, duration; velocity and lengths where
    `FrameLayout` places them)."""
    layout = encoding.frame_layout(frames)
    rows, pitches = np.nonzero(frames[:, layout.notes])
    velocities = lengths = None
    if layout.velocity:
      velocities = np.ascontiguousarray(frames[:, encoding.VELOCITY_INDEX], dtype=np.float32)
    if layout.lengths:
      lengths = np.ascontiguousarray(frames[:, layout.length_columns][rows, pitches],
                                     dtype=np.float32)
    return cls(rows=rows.astype(np.int32), pitches=pitches.astype(np.uint8),
               durations=np.ascontiguousarray(
                   frames[:, encoding.DURATION_INDEX], dtype=np.float32),
               stats=stats, velocities=velocities, lengths=lengths)


def _stats_dict(stats) -> dict:
  """The EncodeStats fields the data layer keeps: counts, and the source's tempo."""
  return {
      "num_notes": int(stats.num_notes),
      "num_frames": int(stats.num_frames),
      "dropped_out_of_range": int(stats.dropped_out_of_range),
      "dropped_drums": int(stats.dropped_drums),
      "tempo_bpm": float(stats.tempo_bpm),
      "time_signature": str(stats.time_signature),
      "velocity_min": int(stats.velocity_min),
      "velocity_max": int(stats.velocity_max),
      "unclosed_notes": int(stats.unclosed_notes),
      "pedal_extended_notes": int(stats.pedal_extended_notes),
      "start_step": int(stats.start_step),
  }


def _file_signature(path: str) -> tuple:
  st = os.stat(path)
  return (int(st.st_size), int(st.st_mtime_ns))


# --------------------------------------------------------------------------
# midi_dir


def list_midi_files(data_dir: str) -> list[SourceFile]:
  """Every .mid/.midi file below data_dir (recursive, case-insensitive, sorted).

  Raises:
    FileNotFoundError: data_dir is not a folder.
    ValueError: no MIDI file below it.
  """
  root = os.path.abspath(os.path.expanduser(data_dir))
  if not os.path.isdir(root):
    raise FileNotFoundError(
        f"--data_dir {data_dir!r} is not a folder: point --data_dir at a folder "
        "of .mid/.midi files")
  files = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for filename in filenames:
      if filename.lower().endswith(MIDI_EXTENSIONS):
        path = os.path.join(dirpath, filename)
        name = os.path.relpath(path, root).replace(os.sep, "/")
        signature = _file_signature(path)
        files.append(SourceFile(name, path, signature, signature[0]))
  if not files:
    raise ValueError(f"no .mid/.midi files found below {root}: point --data_dir "
                     "at a folder that contains MIDI files")
  files.sort(key=lambda f: f.name)
  return files


# --------------------------------------------------------------------------
# bach_chorales


def _import_music21():
  try:
    import music21  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"--dataset=bach_chorales and music21_corpus need the music21 package and its corpus: "
        f"{CORPUS_INSTALL_HINT}; or use --dataset=midi_dir") from e
  return music21


def list_bach_chorales() -> list[SourceFile]:
  """The Bach chorale score files of the corpus that music21 installs (sorted).

  Names are 'bach/<file>' relative to music21's corpus folder; the signature holds the
  music21 version and the file's size and content hash (not its modification time, which
  differs between two installs of one version), so installs share one cache entry and
  upgrading music21 re-encodes.
  """
  music21 = _import_music21()
  version = str(music21.__version__)
  paths = [str(p) for p in music21.corpus.getComposer("bach")]
  paths = [p for p in paths if p.lower().endswith(CHORALE_EXTENSIONS)]
  if not paths:
    raise ValueError(
        f"music21 {version} lists no Bach chorales in its corpus: reinstall it "
        f"({CORPUS_INSTALL_HINT}) or use --dataset=midi_dir")
  root = os.path.dirname(os.path.dirname(os.path.abspath(paths[0])))
  files = []
  for path in paths:
    name = os.path.relpath(path, root).replace(os.sep, "/")
    size = os.path.getsize(path)
    files.append(SourceFile(name, path, (version, size, file_sha256(path)[:24]), size))
  files.sort(key=lambda f: f.name)
  return files


# music21 corpus folders left out of --dataset=music21_corpus by default: the chorales have
# their own source; the demos and theory exercises are not repertoire.
CORPUS_DEFAULT_EXCLUDED = ("bach", "demos", "theoryExercises")
SCORE_EXTENSIONS = CHORALE_EXTENSIONS + (".abc",)


def _corpus_root(music21) -> str:
  return os.path.dirname(os.path.abspath(music21.corpus.__file__))


def corpus_collections() -> dict[str, list[str]]:
  """{collection (a top folder of music21's corpus): its score files (sorted paths)}."""
  music21 = _import_music21()
  root = _corpus_root(music21)
  found: dict[str, list[str]] = {}
  for path in map(str, music21.corpus.getCorePaths()):
    if path.lower().endswith(SCORE_EXTENSIONS):
      top = os.path.relpath(path, root).split(os.sep)[0]
      found.setdefault(top, []).append(path)
  return {k: sorted(v) for k, v in sorted(found.items())}


def corpus_licence_notes(collections) -> dict[str, str]:
  """{'corpus' or a collection: the path of the licence note music21 ships with it}: the
  corpus's own note (encodings licensed for use, some not for commercial use) and those of
  the chosen collections that have one."""
  root = _corpus_root(_import_music21())
  notes = {}
  for key, folder in [("corpus", root)] + [(c, os.path.join(root, c)) for c in collections]:
    path = os.path.join(folder, "license.txt")
    if os.path.isfile(path):
      notes[key] = path
  return notes


def _abc_tunes(path: str) -> list[int]:
  """The X: numbers of the tunes in an ABC file (one per tune)."""
  numbers = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if line.startswith("X:"):
        digits = "".join(c for c in line[2:].strip() if c.isdigit())
        if digits:
          numbers.append(int(digits))
  return numbers


def _corpus_selection(corpus: str, available: dict) -> list[str]:
  wanted = [c.strip() for c in corpus.split(",") if c.strip()]
  if not wanted:
    return [c for c in available if c not in CORPUS_DEFAULT_EXCLUDED]
  by_lower = {c.lower(): c for c in available}
  unknown = [c for c in wanted if c.lower() not in by_lower]
  if unknown:
    raise ValueError(f"--corpus: {', '.join(unknown)} is not a collection of music21's "
                     f"corpus; choose from {', '.join(available)}")
  return [by_lower[c.lower()] for c in wanted]


def list_music21_corpus(corpus: str = "") -> list[SourceFile]:
  """The score files of music21's corpus in the chosen collections (sorted by name).

  corpus: comma-separated collections (`corpus_collections`), case-insensitive; empty = all
  but CORPUS_DEFAULT_EXCLUDED. An ABC file holding several tunes gives one SourceFile per
  tune, named '<file>#<X number>'. Signatures hold music21's version and each file's size
  and content hash, as for the chorales.
  """
  music21 = _import_music21()
  version, root = str(music21.__version__), _corpus_root(music21)
  available = corpus_collections()
  files = []
  for collection in _corpus_selection(corpus, available):
    for path in available[collection]:
      name = os.path.relpath(path, root).replace(os.sep, "/")
      size = os.path.getsize(path)
      signature = (version, size, file_sha256(path)[:24])
      tunes = _abc_tunes(path) if path.lower().endswith(".abc") else []
      if len(tunes) > 1:
        files += [SourceFile(f"{name}#{n}", path, signature + (n,), size // len(tunes), n)
                  for n in dict.fromkeys(tunes)]
      else:
        files.append(SourceFile(name, path, signature, size))
  if not files:
    raise ValueError(f"music21 {version} has no scores in --corpus={corpus!r}")
  files.sort(key=lambda f: f.name)
  return files


def chorale_midi_bytes(path: str) -> bytes:
  """Parses a corpus score with music21 and exports it to MIDI bytes.

  music21's own parse cache is bypassed (it would freeze and thaw every score,
  which is slower than parsing, and write pickles): our cache holds the frames.
  A pickup bar (music21's `paddingLeft` of the first bar) becomes leading silence, as MIDI
  files write it, so that `EncodeStats.start_step` places the first beat in its bar;
  music21's export would start the pickup on the downbeat.
  """
  return score_midi_bytes(path)


def _unshare_time_signatures(music21, score) -> None:
  """music21's ABC reader puts one TimeSignature object in every bar that returns to a
  metre; its MIDI export then refuses the object's second appearance. Each bar gets its own
  copy (the same metre, so the same MIDI)."""
  seen = set()
  for measure in score.recurse().getElementsByClass(music21.stream.Measure):
    for ts in list(measure.getElementsByClass(music21.meter.TimeSignature)):
      if id(ts) in seen:
        measure.replace(ts, copy.deepcopy(ts))
      else:
        seen.add(id(ts))


def score_midi_bytes(path: str, number: int | None = None) -> bytes:
  """Any score music21 reads (a file, or tune `number` of a many-tune ABC file) as MIDI
  bytes, a pickup bar as leading silence (see `chorale_midi_bytes`)."""
  music21 = _import_music21()
  extra = {} if number is None else {"number": number}
  score = music21.converter.parse(path, forceSource=True, storePickle=False, **extra)
  if isinstance(score, music21.stream.Opus):  # a file of tunes read whole: its first
    score = score.scores[0]
  _unshare_time_signatures(music21, score)
  exported = music21.midi.translate.streamToMidiFile(score)
  bars = score.parts[0].getElementsByClass("Measure") if score.parts else []
  pickup = float(bars[0].paddingLeft) if len(bars) else 0.0
  if pickup > 0:
    midi = mido.MidiFile(file=io.BytesIO(exported.writestr()))
    delay = round(pickup * midi.ticks_per_beat)
    for track in midi.tracks:
      if track:
        track[0].time += delay
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()
  return exported.writestr()


# --------------------------------------------------------------------------
# Encoding one MIDI source file (runs in worker processes).


def encode_source_file(kind: str, source_file: SourceFile,
                       settings: dict) -> tuple[SparsePiece | None, str | None]:
  """Encodes one file of a MIDI source.

  Args:
    kind: 'midi_dir', 'bach_chorales' or 'music21_corpus'.
    source_file: the file.
    settings: steps_per_quarter, duration_mode, include_drums.

  Returns:
    (piece, None) on success, or (None, reason) for a file that is skipped:
    unreadable or invalid MIDI, or one with no notes in range.
  """
  name = source_file.name
  try:
    if kind in ("bach_chorales", "music21_corpus"):
      try:
        source = score_midi_bytes(source_file.path, source_file.number)
      except Exception as e:  # pylint: disable=broad-except
        # music21 raises many kinds (its own, ValueError, IndexError, ...) on scores it
        # cannot export; the file is skipped with the reason, never the whole load
        return None, f"music21 could not convert {name} to MIDI: {type(e).__name__}: {e}"
    elif kind == "midi_dir":
      source = source_file.path
    else:
      raise ValueError(f"not a MIDI source kind: {kind!r}")
    frames, stats = encoding.encode_midi(source, name=name, **settings)
  except encoding.MidiError as e:
    return None, str(e)
  except OSError as e:
    return None, f"cannot read {name}: {e}"
  stats = _stats_dict(stats)
  if frames.shape[0] == 0:
    return None, (f"{name}: no notes in pitches {encoding.LOWEST_PITCH}.."
                  f"{encoding.LOWEST_PITCH + encoding.NUM_NOTES - 1} "
                  f"({stats['dropped_out_of_range']} out of range, "
                  f"{stats['dropped_drums']} drum notes dropped)")
  return SparsePiece.from_frames(np.asarray(frames, np.float32), stats), None


# --------------------------------------------------------------------------
# json: the polyphonic-music benchmark format.


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _json_pitches(step, where: str, t: int) -> list[int]:
  """A time step's pitches; anything but a list of whole numbers is an error naming it."""
  if not isinstance(step, list):
    raise ValueError(f"{where}, time step {t}: a time step must be a list of MIDI pitches, "
                     f"got {type(step).__name__}")
  for pitch in step:
    whole = isinstance(pitch, int) or (isinstance(pitch, float) and pitch.is_integer())
    if isinstance(pitch, bool) or not whole:
      raise ValueError(f"{where}, time step {t}: a pitch must be a whole MIDI note number, "
                       f"got {pitch!r}")
  return [int(p) for p in step]


def _json_piece(piece, where: str) -> SparsePiece:
  """A list of time steps (lists of MIDI pitches) -> one frame per step."""
  if not isinstance(piece, list):
    raise ValueError(f"{where}: a piece must be a list of time steps, got "
                     f"{type(piece).__name__}")
  rows, pitches = [], []
  for t, step in enumerate(piece):
    step = _json_pitches(step, where, t)
    rows.extend([t] * len(step))
    pitches.extend(step)
  index = np.asarray(pitches, dtype=np.int64).reshape(-1) - encoding.LOWEST_PITCH
  keep = (index >= 0) & (index < encoding.NUM_NOTES)
  row_array = np.asarray(rows, dtype=np.int32)[keep]
  index = index[keep]
  # A pitch listed twice in one time step is one onset.
  if index.size:
    pairs = np.unique(row_array.astype(np.int64) * encoding.NUM_NOTES + index)
    row_array = (pairs // encoding.NUM_NOTES).astype(np.int32)
    index = pairs % encoding.NUM_NOTES
  num_frames = len(piece)
  stats = {
      "num_notes": int(index.size),
      "num_frames": num_frames,
      "dropped_out_of_range": int((~keep).sum()),
      "dropped_drums": 0,
  }
  return SparsePiece(rows=row_array, pitches=index.astype(np.uint8),
                     durations=np.ones(num_frames, np.float32), stats=stats)


def read_json_benchmark(path: str) -> tuple[list[tuple[str, str, SparsePiece]],
                                            list[tuple[str, str]]]:
  """Reads {"train"|"valid"|"test": [piece, ...]}.

  A piece is a list of time steps, a time step a list of the MIDI pitches
  sounding; each time step becomes one frame of duration 1.0 (an empty step is
  a rest frame). Pitches outside 21..126 are dropped and counted.

  Returns:
    ([(split, name, piece), ...], skipped) where name is '<split>/<index>' and
    skipped lists empty pieces as (name, reason).
  """
  try:
    with open(path, "r", encoding="utf-8") as f:
      data = json.load(f)
  except OSError as e:
    raise FileNotFoundError(
        f"cannot read --data_path {path!r}: {e}; point --data_path at a "
        "benchmark .json file") from e
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(data, dict):
    raise ValueError(
        f"{path}: expected a JSON object with keys 'train', 'valid', 'test' "
        "(the polyphonic-music benchmark format)")
  unknown = sorted(set(data) - set(splits_lib.SPLITS))
  if unknown:
    logging.warning("%s: ignoring keys %s (expected train/valid/test)", path,
                    unknown)
  pieces, skipped = [], []
  missing = [split for split in splits_lib.SPLITS if split not in data]
  if missing:
    raise ValueError(f"{path} has no {', '.join(repr(m) for m in missing)} split; the "
                     "benchmark format needs 'train', 'valid' and 'test'")
  for split in splits_lib.SPLITS:
    if not isinstance(data[split], list):
      raise ValueError(f"{path}: {split!r} must be a list of pieces")
    width = max(4, len(str(len(data[split]))))
    for i, piece in enumerate(data[split]):
      name = f"{split}/{i:0{width}d}"
      sparse = _json_piece(piece, f"{path}: {name}")
      if sparse.num_frames == 0:
        skipped.append((name, f"{name}: empty piece (no time steps)"))
        continue
      pieces.append((split, name, sparse))
  return pieces, skipped

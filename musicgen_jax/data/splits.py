"""Train/valid/test splits by piece, stable under adding or removing files.

Each piece is placed by a hash of its name (the file's path relative to the
source root) mapped to [0, 1): the same file always lands in the same split, and
adding files never moves existing ones. Splits are never made by window.
"""

import hashlib

SPLITS = ("train", "valid", "test")


def split_bucket(name: str) -> float:
  """Maps a piece name to a fixed number in [0, 1) (SHA-256, platform-free)."""
  digest = hashlib.sha256(name.replace("\\", "/").encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(name: str, valid_fraction: float, test_fraction: float) -> str:
  """'test' for buckets below test_fraction, then 'valid', else 'train'."""
  bucket = split_bucket(name)
  if bucket < test_fraction:
    return "test"
  if bucket < test_fraction + valid_fraction:
    return "valid"
  return "train"

"""The dataset layer: sources, encoding cache, splits, batches, statistics.

    cfg = DataConfig(dataset="midi_dir", data_dir="midi/")
    ds = load_dataset(cfg)                      # ds.train, ds.valid, ds.test
    batches = WindowBatches(ds.train, seq_len=48, global_batch_size=64, seed=0)
    frames = batches.batch(step)                # float32[64, 49, F]
"""

from musicgen_jax.data.batches import ShareBatches, StreamBatches, WindowBatches
from musicgen_jax.data.config import STUDY_FRAME, DataConfig, default_cache_dir
from musicgen_jax.data.pipeline import Dataset, Piece, encode_file, load_dataset
from musicgen_jax.data.splits import SPLITS, assign_split, split_bucket
from musicgen_jax.data.stats import dataset_statistics

__all__ = [
    "STUDY_FRAME",
    "SPLITS",
    "ShareBatches",
    "DataConfig",
    "Dataset",
    "Piece",
    "StreamBatches",
    "WindowBatches",
    "assign_split",
    "dataset_statistics",
    "encode_file",
    "default_cache_dir",
    "load_dataset",
    "split_bucket",
]

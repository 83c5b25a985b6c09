"""The dataset layer: sources, encoding cache, splits, batches, statistics.

    cfg = DataConfig(dataset="midi_dir", data_dir="midi/")
    ds = load_dataset(cfg)                      # ds.train, ds.valid, ds.test
    sampler = BatchSampler(ds.train, seq_len=48, global_batch_size=64, seed=0)
    batch = sampler.batch(step)                 # float32[64, 49, 107]
"""

from musicgen_jax.data.batches import BatchSampler
from musicgen_jax.data.config import DataConfig, default_cache_dir
from musicgen_jax.data.flags import data_config_from_flags, define_data_flags
from musicgen_jax.data.pipeline import Dataset, Piece, load_dataset
from musicgen_jax.data.splits import SPLITS, assign_split, split_bucket
from musicgen_jax.data.stats import dataset_statistics

__all__ = [
    "SPLITS",
    "BatchSampler",
    "DataConfig",
    "Dataset",
    "Piece",
    "assign_split",
    "data_config_from_flags",
    "dataset_statistics",
    "default_cache_dir",
    "define_data_flags",
    "load_dataset",
    "split_bucket",
]

"""The data pipeline: phase spaces, Parquet shards generated on Ray Data, and the loader.

>>> from raytrack.data import load
>>> splits = load("data/default")      # train / validation / test, split by shard
"""

from raytrack.data.loader import DatasetSplits, Split, load
from raytrack.data.phase_space import PhaseSpace, PhaseSpaceError, load_phase_space
from raytrack.data.schema import COLUMNS, INPUT_COLUMNS, TARGET_COLUMNS, DatasetError

__all__ = [
    "COLUMNS",
    "INPUT_COLUMNS",
    "TARGET_COLUMNS",
    "DatasetError",
    "DatasetSplits",
    "PhaseSpace",
    "PhaseSpaceError",
    "Split",
    "load",
    "load_phase_space",
]

"""The compiled drivers of raytrack_mlp.hpp, built once for all the export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raytrack.export import INCLUDE_DIR

from .drivers import CPP_MAIN, MLP_DRIVER, build


def skip_on_big_endian() -> None:
    if np.dtype("=f4").byteorder not in ("=", "<") or not np.little_endian:
        pytest.skip("the test driver exchanges native floats; this host is big-endian")


@pytest.fixture(scope="session")
def cpp_predict(tmp_path_factory) -> Path:
    """The C++ twin of the NumPy reader (forward() from file to file), compiled once."""
    skip_on_big_endian()
    return build(CPP_MAIN, tmp_path_factory.mktemp("cpp"), "predict", f"-I{INCLUDE_DIR}")


@pytest.fixture(scope="session")
def cpp_predict_native(tmp_path_factory) -> Path:
    """The same driver built for this CPU (-O3 -march=native): predict_batch's SIMD code paths
    (AVX-512 or AVX where the CPU has them; the portable build above runs its lane loops)."""
    skip_on_big_endian()
    work = tmp_path_factory.mktemp("cpp-native")
    return build(CPP_MAIN, work, "predict", f"-I{INCLUDE_DIR}", "-O3", "-march=native")


@pytest.fixture(scope="session")
def mlp_driver(tmp_path_factory) -> Path:
    """raytrack_mlp.hpp's forward() and forward_with_jacobian() printed per track."""
    return build(MLP_DRIVER, tmp_path_factory.mktemp("mlp"), "jacobian", f"-I{INCLUDE_DIR}")

"""The C++ side of ``bench deploy``: one program with every model's trigger header, the
Dormand-Prince of ``dormand_prince.hpp`` and the driver of ``deploy_driver.hpp``, compiled once
with ``-O3 -march=native``, run once per model and field on one core.

A model whose constant data does not fit the header's 64 KB (``python -m raytrack.export
--header`` refuses it) is run through ``raytrack_mlp.hpp`` from a ``model.bin`` instead, one
track a call, and labelled so.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raytrack.physics import DipoleField, Field, GridField
from raytrack.physics.fields import POLARITIES

HERE = Path(__file__).resolve().parent
CXX_FLAGS = ("-std=c++17", "-O3", "-march=native")
GRID_MAGIC = b"RTGRID1\0"


@dataclass(frozen=True)
class CppModel:
    """A model as the C++ program calls it: its trigger header, or its model.bin."""

    header: Path | None = None
    model_bin: Path | None = None

    @property
    def engine(self) -> str:
        return "header" if self.header is not None else "raytrack_mlp.hpp"


@dataclass
class CppRun:
    """What the program measured for one model on one field: seconds over all tracks."""

    predict_seconds: float
    jacobian_seconds: float
    rk_seconds: list[float]
    predicted: np.ndarray  # (N, 4) float64 of predict's float32
    predicted_with_jacobian: np.ndarray
    rk_ends: list[np.ndarray]  # (N, 4) per setting, NaN rows for dropped tracks


def compiler() -> str:
    """The system C++ compiler, or a clear error."""
    found = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not found:
        raise RuntimeError("bench deploy needs a C++17 compiler (g++, c++ or clang++) on PATH")
    return found


def export_model(model, work: Path, index: int) -> CppModel:
    """The model's trigger header (namespace ``m<index>``) in ``work``, or its model.bin when the
    header refuses it (over 64 KB)."""
    from raytrack.export.header import write_header
    from raytrack.export.header_data import ConstantMemoryError
    from raytrack.export.model_bin import BinModel, write_model_bin

    try:
        header = work / f"m{index}.h"
        write_header(BinModel.from_torch(model), header, namespace=f"m{index}")
        return CppModel(header=header)
    except ConstantMemoryError:
        path = work / f"m{index}.bin"
        write_model_bin(model, path)
        return CppModel(model_bin=path)


def program_source(models: list[CppModel]) -> str:
    """The benchmark's main.cpp: the models' headers, reader wrappers, a table of functions."""
    lines = [f'#include "{m.header.name}"' for m in models if m.header is not None]
    readers = [(k, m) for k, m in enumerate(models) if m.model_bin is not None]
    if readers:
        lines.append('#include "raytrack_mlp.hpp"')
    lines += ['#include "deploy_driver.hpp"', "", "namespace {"]
    for k, m in readers:
        # One track a call, as the header's predict: the reader's per-call scratch included.
        lines += [
            f"const raytrack::Mlp& reader{k}() {{",
            f'  static const raytrack::Mlp mlp = raytrack::load_mlp("{m.model_bin}");',
            "  return mlp;",
            "}",
            f"void predict{k}(const float* in, float* out) {{ reader{k}().forward(in, out, 1); }}",
            f"void jacobian{k}(const float* in, float* out, float* jac) {{",
            f"  reader{k}().forward_with_jacobian(in, out, jac, 1);",
            "}",
        ]
    entries = [
        f"{{m{k}::predict, m{k}::predict_with_jacobian}}"
        if m.header is not None
        else f"{{predict{k}, jacobian{k}}}"
        for k, m in enumerate(models)
    ]
    lines += [
        "const raytrack_bench::ModelFunctions kModels[] = {",
        *(f"    {entry}," for entry in entries),
        "};",
        "}  // namespace",
        "",
        "int main(int argc, char** argv) {",
        f"  return raytrack_bench::main(argc, argv, kModels, {len(models)});",
        "}",
    ]
    return "\n".join(lines) + "\n"


def build(models: list[CppModel], work: Path) -> tuple[Path, float]:
    """Compile the program in ``work``; returns its path and the compile's wall time, s."""
    from raytrack.export.model_bin import INCLUDE_DIR

    source = work / "deploy_bench.cpp"
    source.write_text(program_source(models))
    exe = work / "deploy_bench"
    includes = [f"-I{path}" for path in (work, HERE, INCLUDE_DIR)]
    start = time.perf_counter()
    done = subprocess.run(
        [compiler(), *CXX_FLAGS, *includes, str(source), "-o", str(exe)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"compiling {source} failed:\n{done.stderr[-4000:]}")
    return exe, time.perf_counter() - start


def field_line(field: Field, work: Path, name: str) -> str:
    """The job's field line; a grid is written to ``work/<name>.grid`` for the program."""
    if isinstance(field, DipoleField):
        b0 = POLARITIES[field.polarity] * field.b0
        return f"field dipole {b0!r} {field.z0!r} {field.sigma!r}"
    if isinstance(field, GridField):
        path = work / f"{name}.grid"
        with open(path, "wb") as out:
            out.write(GRID_MAGIC)
            out.write(np.asarray(field.shape, dtype="<i8").tobytes())
            out.write(np.asarray(field.origin + field.spacing, dtype="<f8").tobytes())
            out.write(np.ascontiguousarray(field.values, dtype="<f8").tobytes())
        return f"field grid {path}"
    kind = field.describe().get("type")
    raise ValueError(f"bench deploy's C++ integrator knows the dipole and grid maps, not {kind!r}")


def run(
    exe: Path,
    work: Path,
    name: str,
    model_index: int,
    field: Field,
    inputs: np.ndarray,
    settings: list[tuple[float, float, float]],
    rounds: int = 3,
) -> CppRun:
    """Run the program for one model on one field: ``inputs`` (N, 7) float64 tracks,
    ``settings`` (position tolerance mm, slope tolerance, step cap mm or inf) of the integrator."""
    out = work / name
    out.mkdir()
    tracks = out / "tracks.bin"
    tracks.write_bytes(np.ascontiguousarray(inputs, dtype="<f8").tobytes())
    job = [
        f"tracks {tracks} {len(inputs)}",
        field_line(field, work, name),
        f"model {model_index}",
        f"rounds {rounds}",
        f"out {out}",
        *(f"setting {p!r} {s!r} {'inf' if math.isinf(c) else repr(c)}" for p, s, c in settings),
    ]
    (out / "job.txt").write_text("\n".join(job) + "\n")
    done = subprocess.run(
        [str(exe), str(out / "job.txt")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{exe} {out / 'job.txt'}: {done.stderr.strip()}")
    times = {}
    for line in done.stdout.splitlines():
        words = line.split()
        times[" ".join(words[:-1])] = float(words[-1])
    n = len(inputs)
    return CppRun(
        predict_seconds=times["predict"],
        jacobian_seconds=times["predict_with_jacobian"],
        rk_seconds=[times[f"rk {i}"] for i in range(len(settings))],
        predicted=_read(out / "predict.bin", np.float32, n),
        predicted_with_jacobian=_read(out / "predict_with_jacobian.bin", np.float32, n),
        rk_ends=[_read(out / f"rk_{i}.bin", np.float64, n) for i in range(len(settings))],
    )


def _read(path: Path, dtype: type, n: int) -> np.ndarray:
    return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(n, 4).astype(float)

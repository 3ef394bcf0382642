"""The C++ programs the export tests compile: drivers of raytrack_mlp.hpp (model.bin's reader)
and of a trigger header, each reading float32 tracks and printing or writing what it computes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from raytrack.export import write_model_bin
from raytrack.models.mlp import TrackMLP


def compiler() -> str:
    found = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if found is None:
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH")
    return found


CXX_FLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Werror"]

# The tracks file both drivers read: float32 rows of the 7 inputs.
READ_TRACKS = r"""
#include <cstdio>
#include <vector>

static bool read_tracks(const char* path, std::vector<float>& in) {
  std::FILE* f = std::fopen(path, "rb");
  if (!f) return false;
  float row[7];
  while (std::fread(row, sizeof(float), 7, f) == 7) in.insert(in.end(), row, row + 7);
  return std::fclose(f) == 0;
}
"""

# Prints, per track of the file argv[2], the 4 outputs of predict, the 4 of predict_with_jacobian
# and its 20 Jacobian elements (%.9g: exact for float), of the header argv[1] picks (its index);
# build_headers puts in the headers' #includes (HEADERS) and a case per header (CASES).
HEADER_DRIVER = (
    READ_TRACKS
    + r"""
#include <cstdlib>
HEADERS
using Predict = void (*)(const float*, float*);
using WithJacobian = void (*)(const float*, float*, float*);

static void print_rows(Predict predict, WithJacobian with_jacobian, const std::vector<float>& in) {
  for (std::size_t t = 0; t < in.size() / 7; ++t) {
    float out[4], out2[4], jac[20];
    predict(&in[7 * t], out);
    with_jacobian(&in[7 * t], out2, jac);
    for (float v : out) std::printf("%.9g ", v);
    for (float v : out2) std::printf("%.9g ", v);
    for (float v : jac) std::printf("%.9g ", v);
    std::printf("\n");
  }
}

int main(int argc, char** argv) {
  if (argc != 3) return 64;
  std::vector<float> in;
  if (!read_tracks(argv[2], in)) return 65;
  switch (std::atoi(argv[1])) {
CASES
    default: return 66;
  }
  return 0;
}
"""
)


MLP_DRIVER = r"""
#include "raytrack_mlp.hpp"
#include <cstdio>
#include <fstream>
#include <vector>

// usage: jacobian model.bin tracks.f32 n: prints forward(), then forward_with_jacobian()'s
// outputs and Jacobian, per track.
int main(int argc, char** argv) {
  if (argc != 4) return 64;
  const raytrack::Mlp mlp = raytrack::load_mlp(argv[1]);
  const std::size_t n = std::stoul(argv[3]);
  std::vector<float> in(n * 7), out(n * 4), out2(n * 4), jac(n * 20);
  std::ifstream file(argv[2], std::ios::binary);
  file.read(reinterpret_cast<char*>(in.data()), static_cast<std::streamsize>(in.size() * 4));
  mlp.forward(in.data(), out.data(), n);
  mlp.forward_with_jacobian(in.data(), out2.data(), jac.data(), n);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t j = 0; j < 4; ++j) std::printf("%.9g ", out[4 * t + j]);
    for (std::size_t j = 0; j < 4; ++j) std::printf("%.9g ", out2[4 * t + j]);
    for (std::size_t j = 0; j < 20; ++j) std::printf("%.9g ", jac[20 * t + j]);
    std::printf("\n");
  }
  return 0;
}
"""

# The NumPy reader's C++ twin: forward() of n tracks from a file to a file, then the model's
# layers, weights, version and features on stdout.
CPP_MAIN = r"""
#include "raytrack_mlp.hpp"
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

// usage: predict model.bin inputs.f32 outputs.f32 n [batch]   (raw little-endian float32
// files; batch: predict_batch instead of forward)
int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::cerr << "usage: predict model.bin in out n [batch]\n";
    return 64;
  }
  try {
    const raytrack::Mlp mlp = raytrack::load_mlp(argv[1]);
    const std::size_t n = std::stoul(argv[4]);
    std::vector<float> in(n * raytrack::Mlp::kInputs), out(n * raytrack::Mlp::kOutputs);
    std::ifstream fin(argv[2], std::ios::binary);
    fin.read(reinterpret_cast<char*>(in.data()), in.size() * sizeof(float));
    if (fin.gcount() != static_cast<std::streamsize>(in.size() * sizeof(float))) {
      std::cerr << argv[2] << ": short input file\n";
      return 65;
    }
    if (argc == 6) {
      mlp.predict_batch(in.data(), out.data(), n);
    } else {
      mlp.forward(in.data(), out.data(), n);
    }
    std::ofstream fout(argv[3], std::ios::binary);
    fout.write(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(float));
    std::cout << mlp.n_layers() << " " << mlp.weight_count() << " " << mlp.version << " "
              << mlp.n_features() << "\n";
    return fout ? 0 : 66;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
"""


def build(source: str, work: Path, name: str, *flags: str) -> Path:
    (work / f"{name}.cpp").write_text(source)
    exe = work / name
    cmd = [compiler(), *CXX_FLAGS, *flags, str(work / f"{name}.cpp"), "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"compiling {name} failed:\n{result.stderr}"
    return exe


def parse_rows(stdout: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outputs (n, 4), second outputs (n, 4), Jacobians (n, 4, 5)) of a driver's output."""
    values = np.array(stdout.split(), dtype=np.float64).astype(np.float32).reshape(n, 28)
    return values[:, :4], values[:, 4:8], values[:, 8:].reshape(n, 4, 5)


def build_headers(headers: list[tuple[Path, str]], work: Path, name: str = "headers") -> Path:
    """One program with every (header, namespace) of ``headers`` (one compile for all of them:
    the cost is the core's, once per header); run it with :func:`run_built_header`. The
    headers' file names must differ (each is included by its name)."""
    case = (
        "print_rows(static_cast<Predict>(&{ns}::predict), "
        "static_cast<WithJacobian>(&{ns}::predict_with_jacobian), in)"
    )
    return _header_program(HEADER_DRIVER, case, headers, work, name)


def _header_program(
    driver: str, case: str, headers: list[tuple[Path, str]], work: Path, name: str, *flags: str
) -> Path:
    """``driver`` built with the headers' #includes (HEADERS) and, per header k, ``case: <case
    with {ns} its namespace>; break;`` (CASES)."""
    assert len({header.name for header, _ in headers}) == len(headers), headers
    includes = "".join(f'#include "{header.name}"\n' for header, _ in headers)
    cases = "".join(
        f"    case {k}: {case.format(ns=namespace)}; break;\n"
        for k, (_, namespace) in enumerate(headers)
    )
    source = driver.replace("HEADERS\n", includes).replace("CASES\n", cases)
    dirs = sorted({str(header.parent) for header, _ in headers})
    return build(source, work, name, *(f"-I{d}" for d in dirs), *flags)


def run_built_header(exe: Path, index: int, groups: dict, work: Path):
    """The rows of the ``index``-th header of a :func:`build_headers` program, on the groups'
    tracks."""
    inputs = np.concatenate(list(groups.values()))
    (work / "tracks.f32").write_bytes(inputs.astype("<f4").tobytes())
    args = [str(exe), str(index), str(work / "tracks.f32")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return parse_rows(proc.stdout, len(inputs))


def run_header(header: Path, namespace: str, groups: dict, work: Path):
    """Compile the header driver for ``header`` and run it on the groups' tracks."""
    exe = build_headers([(header, namespace)], work, "header_driver")
    return run_built_header(exe, 0, groups, work)


def run_mlp_driver(driver: Path, model: TrackMLP, groups: dict, work: Path):
    """Write the model's model.bin and run raytrack_mlp.hpp's driver on the groups' tracks."""
    inputs = np.concatenate(list(groups.values()))
    write_model_bin(model, work / "model.bin")
    (work / "tracks.f32").write_bytes(inputs.astype("<f4").tobytes())
    args = [str(driver), str(work / "model.bin"), str(work / "tracks.f32"), str(len(inputs))]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return parse_rows(proc.stdout, len(inputs))


def run_cpp(exe: Path, model_path: Path, inputs: np.ndarray, work: Path, batch: bool = False):
    """Run the driver (``batch``: its predict_batch); returns (CompletedProcess, outputs or
    None)."""
    (work / "in.f32").write_bytes(inputs.astype("<f4").tobytes())
    out_path = work / "out.f32"
    out_path.unlink(missing_ok=True)
    args = [str(exe), str(model_path), str(work / "in.f32"), str(out_path), str(len(inputs))]
    args += ["batch"] if batch else []
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return proc, None
    return proc, np.frombuffer(out_path.read_bytes(), "<f4").reshape(-1, 4)


# Prints, per track of the file argv[2], the 4 outputs of predict_batch of the header argv[1]
# picks (CASES: a case per header, as HEADER_DRIVER's), all tracks in one call.
HEADER_BATCH_DRIVER = (
    READ_TRACKS
    + r"""
#include <cstdlib>
HEADERS
using PredictBatch = void (*)(const float*, float*, int);

int main(int argc, char** argv) {
  if (argc != 3) return 64;
  std::vector<float> in;
  if (!read_tracks(argv[2], in)) return 65;
  const int n = static_cast<int>(in.size() / 7);
  std::vector<float> out(4 * static_cast<std::size_t>(n));
  PredictBatch predict_batch = nullptr;
  switch (std::atoi(argv[1])) {
CASES
    default: return 66;
  }
  predict_batch(in.data(), out.data(), n);
  for (float v : out) std::printf("%.9g\n", v);
  return 0;
}
"""
)


def run_header_batches(headers: list[tuple[Path, str]], groups: dict, work: Path) -> list:
    """predict_batch of each (header, namespace), built for this CPU (-O3 -march=native: the
    SIMD paths), on the groups' tracks: (N, 4) float32 outputs per header."""
    case = "predict_batch = &{ns}::predict_batch"
    native = ("-O3", "-march=native")
    exe = _header_program(HEADER_BATCH_DRIVER, case, headers, work, "batches", *native)
    inputs = np.concatenate(list(groups.values()))
    (work / "tracks.f32").write_bytes(inputs.astype("<f4").tobytes())
    outputs = []
    for k in range(len(headers)):
        args = [str(exe), str(k), str(work / "tracks.f32")]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outputs.append(np.array(proc.stdout.split(), dtype=np.float32).reshape(-1, 4))
    return outputs

"""The trigger header under nvcc (the ``nvidia-cuda-nvcc`` wheel, no GPU needed): a kernel that
calls both functions, and the examples of docs/trigger_header.md, compiled as written."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from raytrack.export.header import write_header
from raytrack.export.model_bin import BinModel

from .drivers import build
from .header_helpers import FORMULATIONS, make_model
from .helpers import MAP_AXIS


def find_nvcc() -> str | None:
    """nvcc of the nvidia-cuda-nvcc wheel (site-packages/nvidia/cu*/bin or, in older wheels,
    nvidia/cuda_nvcc/bin), else one on PATH."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for candidate in sorted(Path(root).glob("*/bin/nvcc")):
            if candidate.is_file():
                return str(candidate)
    return shutil.which("nvcc")


KERNEL = r"""
#include "model.h"
#include "line.h"
#include "map.h"

// tables: the map model's x tables, copied to device global memory by the caller.
__global__ void extrapolate(const float* in, float* out, float* jac, const float* tables, int n) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= n) return;
  float ignored[4];
  raytrack_model::predict(in + 7 * t, out + 4 * t);
  raytrack_model::predict_with_jacobian(in + 7 * t, ignored, jac + 20 * t);
  line::predict(in + 7 * t, ignored);
  map::predict(in + 7 * t, ignored, tables);
  map::predict_with_jacobian(in + 7 * t, ignored, jac + 20 * t, tables);
}

// The host side of the global-memory path: one copy of the x tables to the device.
float* upload_map_tables() {
  float* tables = nullptr;
  if (cudaMalloc(&tables, map::kFieldTableBytes) != cudaSuccess) return nullptr;
  cudaMemcpy(tables, map::data::kFieldTables, map::kFieldTableBytes, cudaMemcpyHostToDevice);
  return tables;
}
"""


@pytest.mark.slow  # starts nvcc
def test_nvcc_compiles_a_kernel_calling_both_functions(tmp_path: Path, monkeypatch) -> None:
    """To an object with device code (nvcc's front end, NVVM, ptxas) and host code, warnings
    as errors, its PTX kept: the numbers land in constant memory, read with ld.const, and the
    constant bank holds exactly the three headers' kConstantBytes; the map model's x tables
    (a path model with x dependence) are not in it: its kernel reads them from global memory
    through the pointer it is given. A header forced past 64 KB is what ptxas itself refuses."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc: pip install nvidia-cuda-nvcc (the test extra) provides one")
    model = BinModel.from_torch(make_model(*FORMULATIONS[0]))
    line = BinModel.from_torch(make_model(*FORMULATIONS[1]))
    on_map = BinModel.from_torch(make_model(*FORMULATIONS[3], axis=MAP_AXIS))
    sizes = write_header(model, tmp_path / "model.h").total
    sizes += write_header(line, tmp_path / "line.h", "line").total
    map_data = write_header(on_map, tmp_path / "map.h", "map")
    sizes += map_data.total
    assert map_data.field_tables == 4 * 3 * 8 * 751 == 72096
    (tmp_path / "kernel.cu").write_text(KERNEL)
    flags = ["-std=c++17", "--Werror", "all-warnings", str(tmp_path / "kernel.cu")]
    # One compile for both: --keep leaves the PTX that ptxas assembled.
    obj, keep = tmp_path / "kernel.o", tmp_path / "intermediate"
    keep.mkdir()
    result = subprocess.run(
        [nvcc, "-c", "-arch=sm_80", "-Xptxas", "-v", "--keep", "--keep-dir", str(keep), *flags,
         "-o", str(obj)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, f"nvcc -c failed:\n{result.stderr}"
    assert obj.stat().st_size > 0
    banks = re.findall(r"bytes gmem, (\d+) bytes cmem\[\d+\]", result.stderr)
    assert banks == [str(sizes)], result.stderr  # the module's user constant bank
    text = (keep / "kernel.ptx").read_text()
    assert ".target sm_80" in text
    assert re.search(r"\.visible \.entry \w*extrapolate", text)
    assert re.search(r"\.const \.align \d+ \.b8 \w*kNetDevice\w*\[\d+\]", text)
    assert re.search(r"\.const \.align \d+ \.b8 \w*kTablesDevice\w*\[18024\]", text)
    assert "ld.const" in text
    assert "kFieldTables" not in text and re.search(r"ld\.global(\.nc)?\.f32", text)

    # The limit is the hardware's: without the check, ptxas refuses the same model.
    big = BinModel.from_torch(make_model("line", "state", "residual", 0.0, "relu", (128, 120)))
    monkeypatch.setattr("raytrack.export.header_data.CONSTANT_MEMORY_BYTES", 1 << 30)
    write_header(big, tmp_path / "model.h")
    result = subprocess.run(
        [nvcc, "-c", "-arch=sm_80", *flags, "-o", str(obj)], capture_output=True, text=True
    )
    assert "too much global constant data" in result.stderr, result.stderr


# --- (6) the examples of docs/trigger_header.md compile as written --------------------------------

DOC = Path(__file__).resolve().parents[3] / "docs" / "trigger_header.md"


def doc_example(first_line: str) -> str:
    """The ```cpp block of docs/trigger_header.md that starts with ``first_line``."""
    for block in re.findall(r"```cpp\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"{DOC}: no cpp example starting {first_line!r}")


@pytest.mark.slow  # starts nvcc
def test_the_documented_examples_compile_and_run(tmp_path: Path) -> None:
    write_header(BinModel.from_torch(make_model(*FORMULATIONS[0])), tmp_path / "model.h")
    exe = build(doc_example("// host.cpp"), tmp_path, "host", f"-I{tmp_path}")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"x -?\d+\.\d{3} mm  y -?\d+\.\d{3} mm", proc.stdout), proc.stdout
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc for the kernel example")
    (tmp_path / "kernel.cu").write_text(doc_example("// kernel.cu"))
    cmd = [nvcc, "-std=c++17", "-O3", "-arch=sm_80", "-c", str(tmp_path / "kernel.cu")]
    result = subprocess.run(
        [*cmd, "-o", str(tmp_path / "kernel.o")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # The x tables' example: a path model on the window-frame map, tables in global memory.
    on_map = make_model(*FORMULATIONS[3], hidden=(16, 8), axis=MAP_AXIS)
    write_header(BinModel.from_torch(on_map), tmp_path / "model.h")
    (tmp_path / "kernel_map.cu").write_text(doc_example("// kernel_map.cu"))
    cmd = [nvcc, "-std=c++17", "-O3", "-arch=sm_80", "-c", str(tmp_path / "kernel_map.cu")]
    result = subprocess.run(
        [*cmd, "-o", str(tmp_path / "kernel_map.o")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

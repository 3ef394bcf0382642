"""raytrack_mlp.hpp and the trigger headers are built from the parts in raytrack/export/cpp/:
the committed single header is what the generator makes, and the parts stay small."""

from __future__ import annotations

import re

import numpy as np
import pytest

from raytrack.export import assemble
from raytrack.export.header import core_source, header_source
from raytrack.export.model_bin import BinModel

#: No part of the headers longer than this many lines.
MOST_LINES = 500


def test_the_committed_header_is_what_its_parts_make(capsys) -> None:
    assert assemble.MLP_HEADER.read_text() == assemble.mlp_header_source(), (
        "raytrack_mlp.hpp is out of date: run python -m raytrack.export.assemble"
    )
    assert assemble.main(["--check"]) == 0
    assert "is up to date" in capsys.readouterr().out


def test_every_part_is_used_and_none_is_long() -> None:
    files = {path.name: path.read_text() for path in assemble.PARTS_DIR.glob("*.hpp")}
    used = {
        name for text in files.values() for name in re.findall(r"^// @include (\S+)$", text, re.M)
    }
    templates = {name for name in files if name.endswith(".template.hpp")}
    assert set(files) == used | templates
    assert not used & templates
    for name, text in files.items():
        assert text.startswith("// @part "), f"{name}: no '// @part' line saying what it holds"
        assert text.count("\n") <= MOST_LINES, f"{name}: {text.count(chr(10))} lines"


def test_the_reader_and_a_trigger_header_hold_the_same_core() -> None:
    core = core_source()
    assert core.startswith("// >>> raytrack core: begin\n")
    assert core.endswith("}  // namespace core\n// <<< raytrack core: end\n")
    assert "@" not in core  # no directive or placeholder left
    assert assemble.MLP_HEADER.read_text().count(core) == 1
    model = BinModel("relu", "raw", *(np.ones(n, dtype=np.float32) for n in (7, 7, 4, 4)))
    model.weights = [np.ones((4, 7), dtype=np.float32)]
    model.biases = [np.zeros(4, dtype=np.float32)]
    text = header_source(model, "plain")
    assert text.count(core) == 1
    assert not re.search(r"@[a-z_]+@|// @include|// @part", text)


def test_placeholders_and_values_must_match(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(assemble, "PARTS_DIR", tmp_path)
    (tmp_path / "inner.hpp").write_text("// @part a part\nint @name@ = 1;\n")
    (tmp_path / "outer.hpp").write_text("// @part a template\n// @include inner.hpp\n@rest@\n")
    assert assemble.assemble("outer.hpp", {"name": "x", "rest": "// @x@"}) == "int x = 1;\n// @x@\n"
    with pytest.raises(ValueError, match="placeholders"):
        assemble.assemble("outer.hpp", {"name": "x"})
    with pytest.raises(ValueError, match="placeholders"):
        assemble.assemble("outer.hpp", {"name": "x", "rest": "", "other": ""})
    with pytest.raises(FileNotFoundError):
        assemble.assemble("../outer.hpp")

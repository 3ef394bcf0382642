"""Issue 17: what the command lines say about interrupts, outputs they cannot write, and where
they put things. Checked in-process before anything starts (no Ray, no training), except the
Ctrl-C of a real training run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def refuse_to_start(*_args, **_kwargs):
    raise AssertionError("started work although an output cannot be written")


def exit_code(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own refusal
        return int(exit_.code)


# Item 4: Ctrl-C on train says how to go on, and the same command resumes.

# Python installs its KeyboardInterrupt handler only where SIGINT is not ignored, and a test
# run in the background inherits an ignored SIGINT: the child sets the handler itself.


# Item 6: an output that cannot be written is named, with its option, before anything starts.


# Item 8: a non-positive worker count is refused.


# Item 11: tune's dataset of a phase-space file lies under STORAGE/datasets, one per content.


def test_tune_dataset_of_a_phase_space_file_lies_under_storage(tmp_path):
    from raytrack import tune
    from raytrack.configs import shipped_file

    classic = shipped_file("phase space", "classic").read_text()
    first, second = tmp_path / "a" / "space.toml", tmp_path / "b" / "space.toml"
    for path, text in ((first, classic), (second, classic.replace("name = ", "name = 'b' #"))):
        path.parent.mkdir()
        path.write_text(text)
    storage = tmp_path / "runs"

    def data_dir(phase_space: Path) -> Path:
        argv = ["--storage", str(storage), "--samples", "2000", "--phase-space", str(phase_space)]
        return Path(tune.plan_from_args(tune.build_parser().parse_args(argv)).options.data_dir)

    mine = data_dir(first)
    assert mine.parent == storage / "datasets"
    assert re.fullmatch(r"space-[0-9a-f]{8}-2000-seed0", mine.name), mine.name
    assert data_dir(second) != mine  # same stem, another phase space: never one dataset
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "space.toml").write_text("# the same phase space\n" + classic)
    assert data_dir(tmp_path / "c" / "space.toml") == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # nothing written
    assert data_dir(Path("classic")) == storage / "datasets" / "classic-2000-seed0"

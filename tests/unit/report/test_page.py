"""The experiment report's page: in a real browser, of an interrupted search, of a directory
that is no experiment, and its table of each trial beside the integrator."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from raytrack.report import main
from raytrack.search.layout import STUDY_FILE
from raytrack.search.timing import CURVE_FILE, equal_accuracy

FIGURES = (
    "p95_vs_weights.png",
    "p95_vs_macs.png",
    "p95_vs_epoch.png",
    "best_error_vs_momentum.png",
    "best_error_vs_dz.png",
    "best_error_vs_x_mid.png",
    "best_error_vs_y_mid.png",
)


def test_each_timed_trial_faces_the_fastest_integrator_at_least_as_accurate(pareto_time_search):
    """Issue 16: the report's table puts each trial beside the fastest integrator setting whose
    mean and P95 are both at most the trial's (bench deploy's rule), and the ratio of times."""
    options, rows = pareto_time_search
    curve = json.loads((options.path / CURVE_FILE).read_text())
    page = (options.path / "report" / "index.html").read_text()
    table = page[page.index('<table class="equal-accuracy">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 1 + len(rows)  # the header and every trial
    for row in rows:
        setting, qualifies = equal_accuracy(curve, row["pos_mean_mm"], row["pos_p95_mm"])
        kept = [s for s in curve["settings"] if s["mean_mm"] is not None]
        as_accurate = [
            s
            for s in kept
            if s["mean_mm"] <= row["pos_mean_mm"] and s["p95_mm"] <= row["pos_p95_mm"]
        ]
        assert qualifies == bool(as_accurate)
        if qualifies:
            assert setting["us_per_track"] == min(s["us_per_track"] for s in as_accurate)
        ratio = setting["us_per_track"] / row["inference_us_per_track"]
        cells = (f"<td>{row['inference_us_per_track']:.3g}</td>",
                 f'<td class="text">{html.escape(setting["label"])}</td>'
                 if qualifies else "none as accurate", f"<td>{ratio:.3g}</td></tr>")  # fmt: skip
        (line,) = [t for t in table.split("<tr>") if f">{row['trial_id']}<" in t]
        assert all(cell in line for cell in cells), (cells, line)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "no chromium: this test opens the report in a real browser; install Debian's "
            "package (apt-get install chromium), as .ci/run does"
        )
    return found


def run_chromium(*args: str, profile: Path) -> str:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={profile}", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


PROBE = """<script>
window.addEventListener("load", () => {
  const states = Array.from(document.images).map(
    (img) => (img.complete && img.naturalWidth > 0 ? "loaded " : "broken ") + img.dataset.file);
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(states);
  document.body.appendChild(out);
});
</script>"""


def images_in_chromium(index: Path, profile: Path) -> list[str]:
    """What a real browser makes of every <img> of the page: "loaded NAME" or "broken NAME"."""
    probe = index.with_name("probe.html")  # beside it: the page as it is, plus the probe
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = run_chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(),
                           profile=profile)  # fmt: skip
    finally:
        probe.unlink()
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.slow  # Chromium
def test_report_images_load_in_headless_chromium(optuna_search, tmp_path):
    options, rows = optuna_search
    report = options.path / "report"
    index = report / "index.html"
    page = index.read_text()
    assert "<table>" in page and all(r["trial_id"] in page for r in rows)
    for header in ("weights [count]", "val P95 [mm]", "training time [s]"):
        assert header in page  # the leaderboard with units
    # issue 15: the tails and the bins across the aperture, the best model's worst track named
    for words in ("val worst [mm]", "<th>P99 [mm]</th><th>worst [mm]</th>", "worst track: ",
                  "mid-leg |x| 0-250 mm", "mid-leg |y| 0-250 mm"):  # fmt: skip
        assert words in page, words
    assert images_in_chromium(index, tmp_path / "profile") == [f"loaded {f}" for f in FIGURES]
    dataset = Path(options.data_dir).name
    for name in FIGURES:  # titled with the experiment and the data set, labelled with units
        text = Image.open(report / name).text
        assert (
            text["Title"].startswith(f"{options.name}: ") and f"data: {dataset}" in text["Title"]
        ), name
        assert re.fullmatch(r"x axis: .*\[.+\]; y axis: .*\[mm\]", text["Description"]), name
    shot = tmp_path / "report.png"
    run_chromium(f"--screenshot={shot}", "--window-size=1200,2400", index.as_uri(),
                 profile=tmp_path / "profile")  # fmt: skip
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    assert len(set(image.getdata())) > 50  # figures and text, not a blank page
    if os.environ.get("RAYTRACK_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["RAYTRACK_KEEP_SCREENSHOT"])


@pytest.mark.slow  # Chromium
def test_report_of_an_interrupted_search(optuna_search, tmp_path, capsys):
    """An interrupted search left no leaderboard, no best/ and no report; one trial was in the
    middle of its epochs. python -m raytrack.report writes the report from the trials' files."""
    options, rows = optuna_search
    experiment = tmp_path / "interrupted"
    shutil.copytree(options.path, experiment)
    for name in ("leaderboard.json", "leaderboard.csv"):
        (experiment / name).unlink()
    shutil.rmtree(experiment / "best")
    shutil.rmtree(experiment / "report")
    cut = next(p for p in experiment.glob("*/result.json") if len(p.read_text().splitlines()) > 1)
    first = cut.read_text().splitlines()[0]
    cut.write_text(first + "\n")  # still at its first epoch
    running = json.loads(first)["trial_id"]
    for snapshot in experiment.glob("experiment_state-*.json"):  # and running for Tune
        state = json.loads(snapshot.read_text())
        for entry in state["trial_data"]:
            trial = json.loads(entry[0])
            if trial["trial_id"] == running:
                entry[0] = json.dumps({**trial, "status": "RUNNING"})
        snapshot.write_text(json.dumps(state))
    # python -m raytrack.report's main in this process: a new interpreter would import torch,
    # Ray and matplotlib again (tests/unit/test_readme.py runs the module itself)
    returncode = main([str(experiment)])
    done = capsys.readouterr()
    assert returncode == 0, done.err[-3000:]
    index = experiment / "report" / "index.html"
    assert done.out.strip() == f"wrote {index}"
    page = index.read_text()
    assert "in progress or interrupted: 3 of 4 trials ended" in page
    assert page.count('<td class="text">unfinished</td>') == 1
    assert "its latest checkpoint" in page  # the best model, from the best trial's checkpoint
    assert all(r["trial_id"] in page for r in rows)
    assert (experiment / STUDY_FILE).name in page  # the optuna-dashboard command
    assert images_in_chromium(index, tmp_path / "profile") == [f"loaded {f}" for f in FIGURES]


def test_report_of_a_directory_that_is_no_experiment(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "not a raytrack experiment" in capsys.readouterr().err

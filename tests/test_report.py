"""`nas report`: one self-contained HTML file, rendered by a real browser."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_ARCH, run_nas

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)




@pytest.fixture(scope="module")
def report(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    proc = run_nas("report", str(run), "--out", str(out), check=True)
    assert proc.stdout.strip() == f"wrote {out}"
    return out


def test_report_is_self_contained(report, run):
    from nas import analysis

    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', html)) >= 4  # front, progress, choices, EDFs
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html), "loads something from the network"
    assert not re.search(r"<(script|link|iframe)\b", html)
    for title in ("Run summary", "Baseline vs best found", "Pareto front", "Top ", "What the search learned per stage",
                  "Rediscovery", "Failures"):
        assert title in html, title
    frame = analysis.trials_frame(run)
    for arch in analysis.top_trials(frame, 10)["arch"]:
        assert arch in html
    assert TINY_ARCH in html and "baseline" in html
    score = analysis.rediscovery(run).score
    assert f"{score:.3f}" in html
    assert "evolution" in html and "tiny" in html and "digits" in html  # controller, space, data
    assert f"optuna-dashboard sqlite:///{(run / 'study.db').resolve()}" in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           report.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    small = image.resize((300, 400))
    colours = small.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the page looks blank"
    not_white = float((np.asarray(small).min(axis=2) < 235).mean())
    assert not_white > 0.1, f"only {not_white:.1%} of the page is not white"
    # the dark header band is at the top: the page was laid out with its CSS
    assert sum(image.getpixel((600, 20))) < 300


def test_report_python_api(run, tmp_path):
    from nas.report import render_report, write_report

    out = write_report(run, tmp_path / "sub" / "r.html", top_k=2)
    assert out.read_text(encoding="utf-8").count("<tr") < render_report(run, top_k=10).count("<tr")


def test_report_of_a_missing_run_is_one_line(tmp_path):
    proc = run_nas("report", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "x.html"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-run" in lines[0] and "not a run directory" in lines[0]
    assert not (tmp_path / "x.html").exists()


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory) -> Path:
    """A finished simulated search (instant): a run without kept weights or real training."""
    return _simulated(tmp_path_factory.mktemp("report_fidelity") / "run", trials=10)


def _simulated(path: Path, trials: int) -> Path:
    from nas.experiment import from_dict
    from nas.search import run_search

    exp = from_dict({"name": "sim", "space": "tiny", "dataset": "digits", "backend": "simulated",
                     "proxy": {"epochs": 3, "resolution": 16, "batch_size": 32}, "controller": "random",
                     "trials": trials, "seed": 1})
    run_search(exp, path, fresh=True, log=lambda message: None)
    return path


def test_report_shows_the_fidelity_check_once_there_is_one(simulated_run, tmp_path):
    from nas.fidelity import check_fidelity
    from nas.report import render_report

    run = tmp_path / "run"
    shutil.copytree(simulated_run, run)
    assert "Proxy fidelity" not in render_report(run)
    check = check_fidelity(run, top=2, random_count=2, epochs=6, log=lambda m: None,
                           trainer=lambda number, arch, proxy: 0.5 + number / 100)
    out = run / "r.html"
    proc = run_nas("report", str(run), "--out", str(out), check=True)
    assert proc.returncode == 0
    html = out.read_text(encoding="utf-8")
    assert "Proxy fidelity" in html and "6 epochs at 16 px" in html
    assert check.summary() in html.replace("&#x27;", "'")
    assert '<img alt="proxy against long accuracy" src="data:image/png;base64,' in html
    for t in check.trials:
        assert t.arch in html and f"{t.long_accuracy:.4f}" in html
    assert ("does not rank these networks reliably" in html) == (check.reliable is False)


def test_report_of_a_damaged_fidelity_file_still_renders(simulated_run, tmp_path):
    from nas.report import render_report

    run = tmp_path / "run"
    shutil.copytree(simulated_run, run)
    (run / "fidelity.json").write_text("[]")
    html = render_report(run)
    assert "Proxy fidelity" in html and "not a fidelity file" in html and "Pareto front" in html


def test_report_calls_per_choice_statistics_of_a_few_trials_anecdotes(report, run, tmp_path):
    from nas import analysis
    from nas.report import FEW_TRIALS, render_report

    html = report.read_text(encoding="utf-8")
    n = len(analysis.complete_trials(run))
    assert n < FEW_TRIALS and f"Only {n} evaluated trials" in html and "anecdotes" in html
    assert "volume of objective space the front dominates" in html  # the hypervolume says what it is
    many = tmp_path / "many"
    _simulated(many, trials=FEW_TRIALS)
    assert "anecdotes" not in render_report(many)


def test_progress_plot_marks_the_baseline(run):
    from nas import analysis, plots

    frame = analysis.trials_frame(run)
    base = frame[frame["baseline"] & (frame["state"] == "COMPLETE")].iloc[0]
    ax = plots.progress_figure([run]).axes[0]
    assert "baseline" in ax.get_legend_handles_labels()[1]
    levels = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert levels == [pytest.approx(float(base["reward"]))]

"""The report: synthetic run folders written in the layout of `iterit train` / `iterit demo`, read back into
Markdown + HTML + PNG files; the HTML rendered in headless Chromium to check that every plot loads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_group

from iterit.errors import IterITError
from iterit.report import ReportPaths, read_train_run, write_report
from iterit.storage import write_json, write_table

SOURCES = ("alpaca", "code", "math")
TRAIN_PLOTS = {"ifd_distribution", "ifd_vs_length", "selection_overlap", "source_share", "training_loss"}


def make_train_run(root: Path, *, n: int = 90, budget: int = 10, epochs: int = 3, suffix: str = ".parquet",
                   strategy: str = "iterit", seed: int = 0, checkpoint: bool = True, dynamics: bool = True) -> dict:
    """A train run folder as `iterit train` writes it; returns the selections (ids per epoch) it wrote."""
    rng = np.random.default_rng(seed)
    ids = [f"s{i}" for i in range(n)]
    sources = [SOURCES[i % 3] if i % 5 else SOURCES[0] for i in range(n)]
    lengths = rng.integers(3, 400, size=n)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(
        f"# iterit train\nmodel: /models/tiny\ndata:\n- a.jsonl\nstrategy: {strategy}\nratio: {budget}\n"
        f"update_ratio: 3.0\npool: frozen\ndecay: 0.1\nnum_train_epochs: {epochs}\nlearning_rate: 2.0e-05\n"
        f"output_dir: {root / 'checkpoints'}\n", encoding="utf-8")
    pool = np.arange(3 * budget)
    selections, history, step = [], [], 0
    for epoch in range(epochs):
        scored = np.arange(n) if epoch == 0 else pool
        ifd = rng.uniform(0.3, 1.2, size=n)
        order = scored[np.argsort(ifd[scored])[::-1]]
        picks = [int(i) for i in order if ifd[i] < 1.0][:budget]
        selections.append([ids[i] for i in picks])
        folder = root / "epochs" / str(epoch)
        write_table(folder / f"scores{suffix}", [
            {"id": ids[i], "source": sources[i], "ifd": float(ifd[i]), "loss_cond": 1.0, "loss_prior": 1.2,
             "n_response_tokens": int(lengths[i]), "truncated": False, "reason": None} for i in scored])
        write_table(folder / f"selection{suffix}", [
            {"id": ids[i], "source": sources[i], "rank": rank, "ifd": float(ifd[i]), "diversity": 0.5,
             "score": float(ifd[i]) * 0.5} for rank, i in enumerate(picks)])
        losses = (2.0 - 0.1 * epoch - 0.01 * np.arange(5)).tolist()
        step += 5
        metrics = {"epoch": epoch, "mean_train_loss": float(np.mean(losses)), "losses": losses, "steps": 5,
                   "global_step": step, "train_s": 1.5, "score_s": 0.4, "select_s": 0.1, "tokens": 1234}
        write_json(folder / "metrics.json", metrics)
        if dynamics:
            chosen, first = set(selections[-1]), set(selections[0])
            write_json(folder / "dynamics.json", {
                "epoch": epoch, "budget": budget, "pool_size": len(scored), "scored": len(scored),
                "overlap_with_previous": len(chosen & set(selections[-2])) / budget if epoch else None,
                "share_not_in_epoch0_top": 1 - len(chosen & first) / budget,
                "source_mix": {s: sum(sources[i] == s for i in picks) / budget for s in SOURCES}})
        history.append(metrics)
    if checkpoint:
        log = [{"step": s + 1, "loss": 2.0 - 0.02 * s, "epoch": s / 5} for s in range(step)]
        write_json(root / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json", {"log_history": log})
    write_json(root / "summary.json", {"strategy": strategy, "samples": n, "budget": budget, "epochs": history,
                                       "timings": {"score_s": 1.2, "train_s": 4.5}})
    return {"selections": selections}


def make_demo(root: Path, strategies: tuple[str, ...] = ("iterit", "random")) -> None:
    """A demo folder as `iterit demo` (iterit.demo.compare) writes it."""
    write_json(root / "comparison.json", {
        "settings": {"quick": True, "seed": 0, "epochs": 3, "ratio": 0.08, "pool": "rolling", "train_samples": 90,
                     "families": ["capital", "add"]},
        "strategies": {
            name: {"exact": 0.5 - 0.1 * k, "contains": 0.6 - 0.1 * k, "loss": 1.1 + 0.2 * k,
                   "per_family": {"add": 0.7 - 0.1 * k, "capital": None if k else 0.3},
                   "defective_share": 0.05 * (k + 1), "duplicates_selected": k, "picks": 30, "train_tokens": 5000,
                   "wall_s": 12.0, "run_dir": str(root / "runs" / name)}
            for k, name in enumerate(strategies)},
        "wall_s": 30.5})
    for k, name in enumerate(strategies):
        make_train_run(root / "runs" / name, strategy=name, seed=k)


def png_is_a_picture(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert image.format == "PNG" and min(pixels.shape) >= 200
    assert pixels.std() > 5, f"{path.name} is blank"


def test_train_run_report_has_every_section_and_plot(tmp_path):
    wrote = make_train_run(tmp_path)
    paths = write_report(tmp_path)
    assert isinstance(paths, ReportPaths)
    assert {p.stem for p in paths.plots} == TRAIN_PLOTS
    for plot in paths.plots:
        assert plot.parent == tmp_path / "plots"
        png_is_a_picture(plot)
    markdown = paths.markdown.read_text()
    for name in TRAIN_PLOTS:
        assert f"](plots/{name}.png)" in markdown
    for heading in ("## Settings", "## Selection dynamics per epoch", "## Summary", "## Plots"):
        assert heading in markdown
    first, second = (set(s) for s in wrote["selections"][:2])
    overlap = 100 * len(first & second) / len(second)
    assert f"| 1 | 10 | 30 | {overlap:.1f}% | {len(second - first)} ({100 - overlap:.1f}%) |" in markdown
    page = paths.html.read_text()
    assert page.count('src="data:image/png;base64,') == len(TRAIN_PLOTS)
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "strategy: iterit" in page  # the resolved config, folded
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_report_is_deterministic(tmp_path):
    make_train_run(tmp_path)
    first = write_report(tmp_path)
    page, plots = first.html.read_bytes(), {p: p.read_bytes() for p in first.plots}
    second = write_report(tmp_path)
    assert second.html.read_bytes() == page
    assert {p: p.read_bytes() for p in second.plots} == plots


def test_jsonl_tables_and_loss_from_metrics_when_no_checkpoint(tmp_path):
    make_train_run(tmp_path, suffix=".jsonl", checkpoint=False)
    run = read_train_run(tmp_path)
    assert [len(e.scores) for e in run.epochs] == [90, 30, 30]
    assert run.loss_source == "epochs/<e>/metrics.json" and run.losses.size == 15
    assert run.loss_steps[-1] == 15
    paths = write_report(tmp_path)
    assert "training_loss" in {p.stem for p in paths.plots}


def test_dynamics_are_computed_from_selections_when_files_lack_them(tmp_path):
    wrote = make_train_run(tmp_path, dynamics=False)
    run = read_train_run(tmp_path)
    first, second = (set(s) for s in wrote["selections"][:2])
    assert run.epochs[1].numbers["overlap_with_previous"] == pytest.approx(len(first & second) / 10)
    assert run.epochs[1].numbers["share_not_in_epoch0_top"] == pytest.approx(1 - len(first & second) / 10)
    assert sum(run.epochs[0].numbers["source_mix"].values()) == pytest.approx(1.0)


def test_a_half_written_run_gets_a_report_with_notes(tmp_path):
    make_train_run(tmp_path, epochs=1, checkpoint=False)
    for name in ("config.yaml", "summary.json", "epochs/0/metrics.json"):
        (tmp_path / name).unlink()
    (tmp_path / "epochs" / "0" / "scores.parquet").write_bytes(b"not parquet at all")
    paths = write_report(tmp_path)
    notes = "\n".join(paths.notes)
    assert "config.yaml: absent" in notes and "summary.json: absent" in notes
    assert "scores.parquet: unreadable" in notes
    assert "plot 'training_loss' skipped" in notes and "plot 'selection_overlap' skipped" in notes
    assert {p.stem for p in paths.plots} == {"ifd_distribution", "source_share"}
    assert "## Notes (skipped or missing)" in paths.markdown.read_text()


def test_not_a_run_folder(tmp_path):
    with pytest.raises(IterITError, match="no such run folder"):
        write_report(tmp_path / "missing")
    with pytest.raises(IterITError, match="not a run folder"):
        write_report(tmp_path)


@pytest.mark.slow
def test_demo_report_compares_strategies_and_links_each_run(tmp_path):
    make_demo(tmp_path)
    paths = write_report(tmp_path)
    names = {p.stem for p in paths.plots}
    assert {"strategy_comparison", "loss_by_strategy"} <= names
    assert {f"iterit-{name}" for name in TRAIN_PLOTS} <= names  # iterit in full
    assert not any(name.startswith("random-") for name in names)  # the others briefly
    assert paths.sub_reports == [tmp_path / "runs" / s / "report.html" for s in ("iterit", "random")]
    assert all(p.exists() for p in paths.sub_reports)
    markdown = paths.markdown.read_text()
    assert "| iterit | 0.500 | 0.600 | 1.100 | 5.0% | 0 | 30 |" in markdown
    assert "| random | 0.400 | 0.500 | 1.300 | 10.0% | 1 | 30 |" in markdown
    assert "| family | iterit | random |\n| --- | --- | --- |\n| capital | 0.300 | – |\n| add | 0.700 | 0.600 |" in markdown
    assert "| settings.ratio | 0.08 |" in markdown and "| wall_s | 30.5 |" in markdown
    assert "config.yaml" not in "\n".join(paths.notes)
    assert "[the random run's own report](runs/random/report.html)" in markdown
    png_is_a_picture(tmp_path / "plots" / "strategy_comparison.png")


def test_demo_report_without_comparison_still_reports_the_runs(tmp_path):
    make_train_run(tmp_path / "runs" / "static", strategy="static")
    (tmp_path / "runs" / "empty").mkdir()
    paths = write_report(tmp_path)
    notes = "\n".join(paths.notes)
    assert "comparison.json: absent" in notes and "runs/empty: no report" in notes
    assert "static-ifd_distribution" in {p.stem for p in paths.plots}


PROBE = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.broken = images.filter(i => !i.complete || i.naturalWidth === 0)
    .map(i => i.dataset.plot).join(',');
  document.body.dataset.widths = images.map(i => i.naturalWidth).join(',');
});
</script>"""


def chromium_image_status(page: Path, work: Path) -> dict[str, str]:
    """Render ``page`` (with a probe script added to a copy) and read the probe's attributes from the DOM."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    probed = work / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    done = run_in_group(command, timeout=120)  # Chromium's zygote and renderers die with it, even on a timeout
    match = re.search(r"<body([^>]*)>", done.stdout)
    assert match, f"chromium printed no DOM (status {done.returncode}): {done.stderr[-2000:]}"
    return dict(re.findall(r'data-(\w+)="([^"]*)"', match.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="headless Chromium is absent (Debian: apt-get install chromium; .ci/run installs it)")
def test_every_plot_loads_in_headless_chromium(tmp_path):
    make_demo(tmp_path / "demo")
    paths = write_report(tmp_path / "demo")
    embedded = paths.html.read_text().count("data:image/png;base64,")
    status = chromium_image_status(paths.html, tmp_path)
    assert status.get("images") == str(embedded) and embedded == len(paths.plots)
    assert status.get("broken") == "", f"plots that did not load: {status.get('broken')}"
    assert all(int(w) >= 200 for w in status["widths"].split(","))


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    import sys

    make_train_run(tmp_path, epochs=1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it now raises ImportError
    with pytest.raises(IterITError, match=r"pip install 'iterit\[plot\]'"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_summary_numbers_are_shown(tmp_path):
    make_train_run(tmp_path, epochs=2)
    markdown = write_report(tmp_path).markdown.read_text()
    assert "| timings.score_s | 1.2 |" in markdown and "| budget | 10 |" in markdown


@pytest.mark.slow
def test_report_of_a_real_tiny_train_run(tiny_model_dir, tmp_path):
    import torch

    from iterit.training import TrainConfig, train

    data = tmp_path / "data.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for i in range(32):
            question, answer = (f"What is {i} plus {i % 7}?", str(i + i % 7)) if i % 2 else (f"Say {i} twice.", f"{i} {i}")
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            handle.write(json.dumps({"id": f"s{i}", "messages": messages}) + "\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from threads; a busy machine loses a lot
    try:
        result = train(TrainConfig(model=str(tiny_model_dir), data=[str(data)], out=str(tmp_path / "run"),
                                   strategy="iterit", ratio=8, update_ratio=2, num_train_epochs=2,
                                   per_device_train_batch_size=4, learning_rate=1e-2, max_length=128,
                                   max_batch_tokens=2048, use_cpu=True, quiet=True, seed=0, threshold=10.0))
    finally:
        torch.set_num_threads(threads)
    paths = write_report(result.run_dir)
    assert {p.stem for p in paths.plots} == TRAIN_PLOTS, paths.notes
    for plot in paths.plots:
        png_is_a_picture(plot)
    run = read_train_run(result.run_dir)
    assert [len(e.selection) for e in run.epochs] == [8, 8] and run.losses.size == 4
    assert run.loss_source.endswith("trainer_state.json")
    markdown = paths.markdown.read_text()
    assert "| strategy | iterit |" in markdown and "| 1 | 8 | 16 |" in markdown


def test_demo_report_shows_picks_outside_the_epoch0_top_and_their_defect_share(tmp_path):
    """Issue 16: how many picks each epoch came from outside the epoch-0 top-B, and how many of them are bad."""
    import json

    make_demo(tmp_path, strategies=("iterit",))
    selections = make_train_run(tmp_path / "runs" / "iterit", seed=0)["selections"]
    bad = {f"s{i}" for i in range(0, 90, 3)}  # every third sample's response is defective
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "truth.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "defect": "swapped" if f"s{i}" in bad else None}) + "\n" for i in range(90)))
    markdown = write_report(tmp_path).markdown.read_text()
    assert "defective among those not in epoch-0 top-B" in markdown
    first = set(selections[0])
    for epoch, picks in enumerate(selections):
        outside = set(picks) - first
        among = f"{sum(i in bad for i in outside) / len(outside):.1%}" if outside else "-"
        share = f"{len(outside) / len(picks):.1%}"
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {epoch} | 10 |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[4] == f"{len(outside)} ({share})" or (not outside and cells[4] in ("0 (0.0%)", share))
        assert cells[5] == f"{sum(i in bad for i in picks) / len(picks):.1%}" and cells[6] == among

"""The README's Python blocks run as written, and the files it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from structvision.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_names_only_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    paths = re.findall(r"`((?:src|tests|benchmarks)/[\w./-]+\.(?:py|md))`", README)
    assert links or paths
    for name in [*links, *paths]:
        if not name.startswith("http"):
            assert (ROOT / name).exists(), name


@pytest.mark.slow
def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    ran = 0
    for block in blocks:
        if "# downloads" in block:  # needs the internet: skipped, as the README says
            continue
        exec(compile(block, "README.md", "exec"), namespace)
        ran += 1
    assert ran == len(blocks) - 1
    assert 0.0 <= namespace["metrics"]["bbox/AP"] <= 1.0
    # a run made by fit() works with the command line too
    runner = CliRunner()
    data = "shapes:image_size=96,num_images=4"
    evaluated = runner.invoke(app, ["eval", "runs/mine", "--data", data])
    assert evaluated.exit_code == 0, evaluated.output
    from structvision.viz import save_png

    save_png(namespace["image"], tmp_path / "x.png")
    predicted = runner.invoke(app, ["predict", "runs/mine", "x.png", "--out", "preds"])
    assert predicted.exit_code == 0, predicted.output

"""Runs a user can trust: seeding, resume with saved settings, signals, kills, bad --set values.

Each test guards a defect of issue 22 that it reproduced on the code before the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_toys import DATA, InitNet
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from structvision import tasks
from structvision.cli import app
from structvision.data.spec import build_dataset

runner = CliRunner()


def _train(run: Path, *extra: str):
    return runner.invoke(app, ["train", "init_net", "--data", DATA, "--out", str(run), *extra])


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step_{step:06d}" / "model.safetensors")


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_same_command_gives_identical_weights_and_seed_is_saved(init_net_recipe, tmp_path):
    for name in ("a", "b"):
        assert _train(tmp_path / name, "--seed", "3").exit_code == 0
    assert _train(tmp_path / "c", "--seed", "4").exit_code == 0
    a, b, c = (_weights(tmp_path / name, 4) for name in "abc")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["seed"] == 3


def test_resume_keeps_the_runs_settings_and_records_the_change(init_net_recipe, tmp_path):
    run = tmp_path / "run"
    first = _train(
        run, "--set", "optimizer=adamw", "--set", "lr=5e-4", "--set", "checkpoint_every=2"
    )
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(
        app, ["train", "init_net", "--out", str(run), "--resume", "--max-steps", "6"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert "max_steps 4 -> 6" in resumed.output
    record = json.loads((run / "config.json").read_text())
    assert record["train"]["optimizer"] == "adamw" and record["train"]["lr"] == 5e-4
    assert record["train"]["max_steps"] == 6 and record["data"] == DATA
    assert record["history"] == [{"resumed_at_step": 4, "changed": {"max_steps": [4, 6]}}]
    trainer = torch.load(run / "checkpoints/step_000006/trainer.pt", weights_only=True)
    assert "exp_avg" in next(iter(trainer["optimizer"]["state"].values()))  # still AdamW


def test_resume_rebuilds_the_saved_model_when_the_recipe_defaults_changed(
    init_net_recipe, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    assert _train(run, "--set", "checkpoint_every=2").exit_code == 0  # width: InitNet's 4
    trained = _weights(run, 4)

    def wider_by_default(*, data, val_data, model_overrides):  # a later release's default
        return init_net_recipe.setup(
            data=data, val_data=val_data, model_overrides={"width": 8, **model_overrides}
        )

    monkeypatch.setitem(tasks.RECIPES, "init_net", replace(init_net_recipe, setup=wider_by_default))
    resumed = runner.invoke(
        app, ["train", "init_net", "--out", str(run), "--resume", "--max-steps", "6"]
    )
    assert resumed.exit_code == 0, resumed.output
    continued = _weights(run, 6)
    assert continued["conv.weight"].shape == trained["conv.weight"].shape == (4, 3, 3, 3)
    assert json.loads((run / "config.json").read_text())["model"]["kwargs"] == {"num_classes": 6}


def test_resume_refuses_data_that_no_longer_fits_the_model(init_net_recipe, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert _train(run).exit_code == 0
    before = _tree_digest(run)

    def more_classes(*, data, val_data, model_overrides):  # the data folder changed under the run
        task = init_net_recipe.setup(data=data, val_data=val_data, model_overrides=model_overrides)
        task.model_config["kwargs"]["num_classes"] += 1
        return task

    monkeypatch.setitem(tasks.RECIPES, "init_net", replace(init_net_recipe, setup=more_classes))
    refused = runner.invoke(
        app, ["train", "init_net", "--out", str(run), "--resume", "--max-steps", "6"]
    )
    assert refused.exit_code == 2, refused.output
    assert "num_classes: the run has 6, the data now gives 7" in " ".join(refused.output.split())
    assert _tree_digest(run) == before


@pytest.mark.parametrize(
    "extra",
    [
        ["--set", "lr=0.1"],
        ["--set", "optimizer=adamw"],
        ["--set", "model.width=8"],
        ["--seed", "1"],
        ["--max-steps", "2"],  # behind the checkpoint's step 4
        ["--data", "shapes:image_size=48,num_images=9"],
    ],
)
def test_refused_resume_writes_nothing(init_net_recipe, tmp_path, extra):
    run = tmp_path / "run"
    assert _train(run, "--set", "model.width=4").exit_code == 0
    before = _tree_digest(run)
    config_bytes = (run / "config.json").read_bytes()
    refused = runner.invoke(app, ["train", "init_net", "--out", str(run), "--resume", *extra])
    assert refused.exit_code == 2, refused.output
    assert "Traceback" not in refused.output
    assert (run / "config.json").read_bytes() == config_bytes
    assert _tree_digest(run) == before


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("lr=fast", "--set lr=fast: lr must be a number"),
        ("batch_size=2.5", "--set batch_size=2.5: batch_size must be an int"),
        ("batch_size=0", "--set batch_size=0: batch_size must be >= 1"),
        ("optimizer=adam", "--set optimizer=adam: optimizer must be one of"),
        ("lrr=3", "unknown setting 'lrr'"),
    ],
)
def test_bad_set_values_get_a_named_error(init_net_recipe, tmp_path, setting, named):
    result = _train(tmp_path / "r", "--set", setting)
    assert result.exit_code == 2
    assert named in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_checkpoint_is_self_contained(init_net_recipe, tmp_path):
    init = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in InitNet(num_classes=6).state_dict().items()}, init)
    run = tmp_path / "run"
    assert _train(run, "--set", f"model.weights_path={init}").exit_code == 0
    init.unlink()  # the initial weights are gone: the checkpoint must be enough
    evaluated = runner.invoke(app, ["eval", str(run), "--data", DATA])
    assert evaluated.exit_code == 0, evaluated.output
    image, _ = build_dataset(DATA, split="val")[0]
    from structvision.viz import save_png

    save_png(image, tmp_path / "x.png")
    predicted = runner.invoke(
        app, ["predict", str(run), str(tmp_path / "x.png"), "--out", str(tmp_path / "p")]
    )
    assert predicted.exit_code == 0, predicted.output
    resumed = runner.invoke(
        app, ["train", "init_net", "--out", str(run), "--resume", "--max-steps", "5"]
    )
    assert resumed.exit_code == 0, resumed.output
    record = json.loads((run / "config.json").read_text())
    assert record["model"]["kwargs"]["weights_path"] == str(init)  # still recorded


def test_model_files_have_the_runs_permissions(init_net_recipe, tmp_path):
    run = tmp_path / "run"
    assert _train(run).exit_code == 0
    folder = run / "checkpoints" / "step_000004"
    modes = {name: (folder / name).stat().st_mode & 0o777 for name in os.listdir(folder)}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] == (run / "config.json").stat().st_mode & 0o777


def test_progress_without_a_terminal_prints_plain_lines(init_net_recipe, tmp_path):
    result = _train(tmp_path / "run")
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(
        "loss" in line and "lr" in line and "img/s" in line and "ETA" in line for line in lines
    )
    assert "parameters" in result.output and "seed 0" in result.output  # start-up summary


def test_recipes_name_lists_settings_with_defaults():
    result = runner.invoke(app, ["recipes", "faster_rcnn"], terminal_width=200)
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "200" in rows["warmup_steps"] and "warm-up" in rows["warmup_steps"]
    from structvision.tasks.detection import FASTER_RCNN_TRAINING

    assert str(FASTER_RCNN_TRAINING.max_steps) in rows["max_steps"]
    assert "adamw" in rows["optimizer"]  # the recipe's default, not TrainConfig's
    assert "model.width" in result.output and "model.pretrained" in result.output


# --------------------------------------------------------------------------- real processes

TRAIN = [
    sys.executable, "-m", "structvision.cli", "train", "faster_rcnn",
    "--data", "shapes:image_size=48,num_images=4,max_objects=2",
    "--set", "batch_size=1", "--set", "model.width=4", "--set", "model.min_size=48",
    "--set", "model.max_size=48", "--set", "log_every=1", "--set", "eval_every=0",
]  # fmt: skip


def _default_sigint() -> None:
    # a test run started in the background inherits SIGINT ignored, which training respects
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*TRAIN, "--out", str(run), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_default_sigint,
    )


def _wait_for_step(process: subprocess.Popen, step: int, lines: list[str]) -> None:
    deadline = time.monotonic() + 120
    for line in process.stdout:
        lines.append(line)
        if line.startswith(f"step {step}/"):
            return
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError("training ended early:\n" + "".join(lines))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_prints_the_resume_command(tmp_path, signum, code):
    run = tmp_path / "run"
    process = _start(run, "--max-steps", "100000", "--set", "checkpoint_every=0")
    lines: list[str] = []
    _wait_for_step(process, 3, lines)
    process.send_signal(signum)
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == code, output
    steps = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert len(steps) == 1, steps  # checkpoint_every=0: only the one the signal asked for
    reached = int(steps[0].removeprefix("step_"))
    assert reached >= 3 and f"stopped after step {reached}" in output
    assert f"structvision train faster_rcnn --out {run} --resume" in " ".join(output.split())
    assert all(
        (run / "checkpoints" / steps[0] / f).is_file()
        for f in ("model.safetensors", "trainer.pt", "config.json")
    )
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_second_ctrl_c_stops_at_once_without_a_broken_checkpoint(tmp_path):
    run = tmp_path / "run"
    # steps of about 0.7 s: the second signal must arrive while the step still runs, which a
    # step of the tiny model (0.1 s) did not always allow on a busy machine
    slower = ("--set", "batch_size=4", "--set", "model.width=32")
    slower += ("--set", "model.min_size=256", "--set", "model.max_size=256")
    process = _start(run, "--max-steps", "100000", "--set", "checkpoint_every=1", *slower)
    lines: list[str] = []
    _wait_for_step(process, 3, lines)
    process.send_signal(signal.SIGINT)
    for line in process.stdout:  # the first one was seen: the handler is gone now
        lines.append(line)
        if "SIGINT received" in line:
            break
    process.send_signal(signal.SIGINT)
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "stopped at once" in output, output
    assert "Traceback" not in output and "--resume" in output
    for folder in (run / "checkpoints").glob("step_*"):  # every visible checkpoint is whole
        assert {p.name for p in folder.iterdir()} == {
            "model.safetensors",
            "trainer.pt",
            "config.json",
        }


@pytest.mark.slow
def test_kill_9_then_resume_finishes_the_run(tmp_path):
    run = tmp_path / "run"
    process = _start(run, "--max-steps", "100000", "--set", "checkpoint_every=1")
    _wait_for_step(process, 4, [])
    process.kill()
    process.wait(timeout=60)
    complete = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    for name in complete:  # every visible step folder is whole
        assert {p.name for p in (run / "checkpoints" / name).iterdir()} == {
            "model.safetensors",
            "trainer.pt",
            "config.json",
        }
    newest = int(complete[-1].removeprefix("step_"))
    resumed = subprocess.run(
        [sys.executable, "-m", "structvision.cli", "train", "faster_rcnn", "--out", str(run),
         "--resume", "--max-steps", str(newest + 2), "--set", "progress=false"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"max_steps 100000 -> {newest + 2}" in resumed.stdout
    assert (run / "checkpoints" / f"step_{newest + 2:06d}").is_dir()


def test_train_options_have_help_text():
    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    text = " ".join(result.output.replace("│", " ").split())
    for phrase in (
        "Optimizer steps to train for (default: the recipe's)",
        "Processes (devices) per machine (default: 1)",
        "Machines (default: 1)",
        "(default: 0; a resumed run keeps its own)",
    ):
        assert phrase in text, phrase


def test_terminal_progress_shows_the_loss_at_every_step(monkeypatch):
    from structvision.engine.progress import TrainingProgress

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    progress = TrainingProgress(total=3, enabled=True)
    assert progress.mode == "bar" and progress.wants_every_step
    with progress:
        progress.step(step=1, loss=0.25, lr=0.01)
        task = progress._bar._progress.tasks[0]
        assert task.completed == 1 and task.fields["status"] == "loss 0.2500  lr 0.01"
    assert TrainingProgress(total=3, enabled=False).mode == "off"


def test_every_model_option_has_a_meaning():
    from structvision.tasks import MODEL_OPTION_HELP, RECIPES

    for recipe in RECIPES.values():
        for option in recipe.model_options:
            assert MODEL_OPTION_HELP.get(option), f"{recipe.name}: model.{option}"

"""Normals and intrinsic images from the command line: train, eval, predict."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.intrinsic import read_normal_png
from structvision.data.spec import build_dataset

runner = CliRunner()

DATA = "world:height=32,width=64,num_images=4"
VAL = "world:height=32,width=64,num_images=2"
QUICK = [
    "--max-steps",
    "2",
    "--set",
    "batch_size=2",
    "--set",
    "progress=false",
    "--set",
    "model.width=8",
]


def test_normals_and_intrinsic_train_evaluate_and_predict(tmp_path):
    from structvision.viz import save_png

    image, _ = build_dataset(VAL, split="val")[0]
    photo = save_png((image * 255).round().byte(), tmp_path / "photo.png")
    expected = {
        "normals": {"mean", "median", "a11", "a22", "a30"},
        "intrinsic": {"mse", "lmse", "whdr"},
    }
    for recipe, options in (("normals", ["--set", "model.with_depth=true"]), ("intrinsic", [])):
        run = tmp_path / recipe
        trained = runner.invoke(
            app,
            [
                "train",
                recipe,
                "--data",
                DATA,
                "--val-data",
                VAL,
                "--out",
                str(run),
                *QUICK,
                *options,
            ],
        )
        assert trained.exit_code == 0, trained.output
        assert expected[recipe] <= set(json.loads((run / "metrics.json").read_text()))
        assert runner.invoke(app, ["eval", str(run), "--data", VAL]).exit_code == 0
        out = tmp_path / f"{recipe}_pred"
        predicted = runner.invoke(app, ["predict", str(run), str(photo), "--out", str(out)])
        assert predicted.exit_code == 0, predicted.output
        record = json.loads((out / "images.json").read_text())["images"][0]
        if recipe == "normals":
            normals, valid = read_normal_png(out / record["normals"])
            assert normals.shape == (3, 32, 64) and valid.all()
        else:
            assert (out / record["albedo"]).is_file() and (out / "photo_shading.npy").is_file()
    wrong = runner.invoke(
        app, ["train", "intrinsic", "--data", "shapes:num_images=4", "--out", str(tmp_path / "w")]
    )
    assert wrong.exit_code == 2 and "lack" in wrong.output


def test_intrinsic_eval_on_a_mit_folder(tmp_path):
    import cv2
    import numpy as np

    run = tmp_path / "run"
    assert (
        runner.invoke(
            app,
            ["train", "intrinsic", "--data", DATA, "--val-data", VAL, "--out", str(run), *QUICK],
        ).exit_code
        == 0
    )
    folder = tmp_path / "mit" / "apple"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    albedo = (rng.random((32, 64, 3)) * 40000 + 10000).astype(np.uint16)
    shading = np.tile(np.linspace(10000, 60000, 64, dtype=np.uint16), (32, 1))
    image = (albedo * (shading[..., None] / 65535.0)).astype(np.uint16)
    for name, array in (("original", image), ("reflectance", albedo), ("shading", shading)):
        cv2.imwrite(str(folder / f"{name}.png"), array)
    result = runner.invoke(
        app, ["eval", str(run), "--data", str(tmp_path / "mit"), "--out", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert {"mse", "lmse", "whdr"} <= set(metrics)


def test_dense_and_tracking_recipes_start_from_the_pretrained_trunk():
    import torch

    from structvision.models.pretrained import DEFAULT_TRUNK, read_trunk_state_dict
    from structvision.tasks import get_recipe

    trunk = read_trunk_state_dict(DEFAULT_TRUNK)
    cases = {
        "normals": (DATA, VAL),
        "intrinsic": (DATA, VAL),
        "sint": (
            "world-track:height=64,width=96,num_frames=4,num_images=2",
            "world-track:height=64,width=96,num_frames=4,num_images=1",
        ),
    }
    for recipe, (data, val) in cases.items():
        task = get_recipe(recipe).setup(data=data, val_data=val, model_overrides={})
        assert task.model_config["kwargs"]["pretrained"] == DEFAULT_TRUNK
        own = dict(task.model.trunk.named_parameters())
        assert all(torch.equal(own[name], trunk[name].to(own[name].dtype)) for name in own), recipe
        scratch = get_recipe(recipe).setup(
            data=data, val_data=val, model_overrides={"pretrained": "none"}
        )
        assert not torch.equal(scratch.model.trunk.stem[0].weight, task.model.trunk.stem[0].weight)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two-step intrinsic and normals runs (``{recipe: folder}``), shared by the tests below."""
    root = tmp_path_factory.mktemp("tiny_runs")
    runs = {}
    for recipe in ("intrinsic", "normals"):
        runs[recipe] = root / recipe
        trained = runner.invoke(
            app, ["train", recipe, "--data", DATA, "--out", str(runs[recipe]), *QUICK]
        )
        assert trained.exit_code == 0, trained.output
    return runs


def test_intrinsic_fine_tunes_from_a_trained_model_adding_a_normals_head(tmp_path, tiny_runs):
    import torch

    from structvision.tasks import load_trained_model
    from structvision.tasks.intrinsic import build_intrinsic
    from structvision.tasks.registry import RecipeError

    runs = tiny_runs
    _, source, _ = load_trained_model(runs["intrinsic"])
    source = source.cpu()
    model = build_intrinsic(
        width=8, with_normals=True, pretrained="none", init=str(runs["intrinsic"])
    ).eval()
    image, _ = build_dataset(VAL, split="val")[0]
    with torch.no_grad():
        expected, got = source([image])[0], model([image])[0]
    # the shared heads are the source's exactly; the new normals head is fresh
    torch.testing.assert_close(got["shading"], expected["shading"])
    torch.testing.assert_close(got["albedo"], expected["albedo"])
    assert got["normals"].shape == (3, *image.shape[-2:])

    # the fine-tuning run from the command line, relit with its new head
    tuned = tmp_path / "tuned"
    result = runner.invoke(
        app,
        [
            "train",
            "intrinsic",
            "--data",
            DATA,
            "--out",
            str(tuned),
            *QUICK,
            *("--set", f"model.init={runs['intrinsic']}", "--set", "model.with_normals=true"),
            *("--set", "model.relight=true"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert {"lmse", "whdr"} <= set(json.loads((tuned / "metrics.json").read_text()))
    with pytest.raises(RecipeError, match="must be an intrinsic model"):
        build_intrinsic(width=8, pretrained="none", init=str(runs["normals"]))
    with pytest.raises(RecipeError, match=r"model\.init .*missing"):
        build_intrinsic(width=8, pretrained="none", init=str(tmp_path / "missing"))


def test_eval_relights_an_intrinsic_model_with_a_normals_model(tmp_path, tiny_runs):
    import numpy as np
    import torch

    from structvision.evaluation.intrinsic import IntrinsicEvaluator
    from structvision.models.intrinsic import relight_shading
    from structvision.tasks import load_trained_model
    from structvision.tasks.predictor import as_image
    from structvision.viz import save_png

    runs = tiny_runs
    out = tmp_path / "relit.json"
    result = runner.invoke(
        app,
        [
            *("eval", str(runs["intrinsic"]), "--data", VAL, "--out", str(out)),
            *("--relight-normals", str(runs["normals"])),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["relight_normals"] == str(runs["normals"])

    # the same by hand: the intrinsic shading relit with the normals model's normals
    intrinsic = load_trained_model(runs["intrinsic"])[1].cpu()
    normals = load_trained_model(runs["normals"])[1].cpu()
    evaluator = IntrinsicEvaluator()
    dataset = build_dataset(VAL, split="val")
    with torch.no_grad():
        for index in range(len(dataset)):
            image, target = dataset[index]
            shading = relight_shading(
                intrinsic([image])[0]["shading"], normals([image])[0]["normals"]
            )
            evaluator.update([target], [{"albedo": image / shading, "shading": shading}])
    expected = evaluator.compute()
    for key in ("lmse", "whdr", "mse"):
        assert abs(record["metrics"][key] - expected[key]) < 1e-6, key
    plain = tmp_path / "plain.json"
    result = runner.invoke(
        app, ["eval", str(runs["intrinsic"]), "--data", VAL, "--out", str(plain)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(plain.read_text())["metrics"]["lmse"] != record["metrics"]["lmse"]

    # predict writes the relit shading (as .npy) and the normals it used
    image, _ = dataset[0]
    photo = save_png((image * 255).round().byte(), tmp_path / "photo.png")
    out = tmp_path / "pred"
    result = runner.invoke(
        app,
        [
            *("predict", str(runs["intrinsic"]), str(photo), "--out", str(out)),
            *("--relight-normals", str(runs["normals"])),
        ],
    )
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        pixels = as_image(photo)
        expected = relight_shading(
            intrinsic([pixels])[0]["shading"], normals([pixels])[0]["normals"]
        )
    written = torch.from_numpy(np.load(out / "photo_shading.npy"))
    torch.testing.assert_close(written, expected)
    assert (out / "photo_normals.png").is_file()

    for run, normals_run, message in (
        (runs["intrinsic"], runs["intrinsic"], "a normals model is needed"),
        (runs["normals"], runs["normals"], "relights an intrinsic model"),
    ):
        failed = runner.invoke(
            app, ["eval", str(run), "--data", VAL, "--relight-normals", str(normals_run)]
        )
        assert failed.exit_code != 0 and message in failed.output, failed.output

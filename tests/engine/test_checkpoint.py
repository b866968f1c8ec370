import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from engine_toys import ToyNet, clone_state, states_equal
from torch import nn

from structvision.engine import (
    CheckpointError,
    find_latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from structvision.engine.checkpoint import (
    is_complete_checkpoint,
    load_state_dict_file,
    save_state_dict,
)


def _trainer_state(model, step):
    model = copy.deepcopy(model)  # the optimizer step below must not touch the saved weights
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.rand(2, 3, 8, 8).unbind(0), [{"labels": torch.tensor([1])}] * 2)[
        "loss_cls"
    ].backward()
    optimizer.step()
    return {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "rng": [{"torch": torch.get_rng_state()}],
    }


def _save(checkpoints_dir, model, step, keep=0):
    return save_checkpoint(
        checkpoints_dir=checkpoints_dir,
        step=step,
        state_dict=model.state_dict(),
        model_config={"name": "toy", "num_classes": 3},
        train_config={"lr": 0.1},
        trainer_state=_trainer_state(model, step),
        keep=keep,
    )


def test_round_trip(tmp_path):
    model = ToyNet()
    folder = _save(tmp_path / "checkpoints", model, step=12)
    assert folder.name == "step_000012"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "trainer.pt",
    ]
    state_dict, config, trainer_state = load_checkpoint(tmp_path)  # a run folder resolves too
    assert states_equal(state_dict, model.state_dict())
    assert config["step"] == 12 and config["model"] == {"name": "toy", "num_classes": 3}
    assert config["train"] == {"lr": 0.1}
    assert trainer_state["step"] == 12
    assert trainer_state["optimizer"]["state"][0]["exp_avg"].shape == model.conv.weight.shape
    # trainer.pt is plain data: the safe loader reads it
    torch.load(folder / "trainer.pt", weights_only=True)

    fresh = ToyNet()
    assert not states_equal(clone_state(fresh), state_dict)
    load_model_weights(fresh, folder)
    assert states_equal(fresh.state_dict(), model.state_dict())


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.decode = nn.Linear(3, 5, bias=False)
        self.decode.weight = self.embed.weight  # one tensor, two names
        self.view = nn.Parameter(torch.arange(6.0).reshape(2, 3)[:, 1])  # non-contiguous


def test_shared_and_non_contiguous_tensors(tmp_path):
    model = _Tied()
    save_state_dict(model.state_dict(), tmp_path / "w.safetensors")
    loaded = load_state_dict_file(tmp_path / "w.safetensors")
    assert states_equal(loaded, model.state_dict())
    fresh = _Tied()
    load_model_weights(fresh, tmp_path / "w.safetensors")
    assert fresh.decode.weight is fresh.embed.weight
    assert torch.equal(fresh.embed.weight, model.embed.weight)


def test_int8_weights_by_hand_and_back_as_float32(tmp_path):
    from structvision.engine.checkpoint import INT8_SCALE_SUFFIX, dequantize_int8, quantize_int8

    weight = torch.tensor([[1.27, -0.635, 0.0], [0.0, 0.0, 0.0], [-2.54, 1.0, 0.02]])
    q, scale = quantize_int8(weight)
    torch.testing.assert_close(scale, torch.tensor([0.01, 1.0, 0.02]))  # zero channel: 1
    assert q.dtype == torch.int8
    assert q.tolist() == [[127, -64, 0], [0, 0, 0], [-127, 50, 1]]  # -63.5 rounds to even
    torch.testing.assert_close(dequantize_int8(q, scale)[2], torch.tensor([-2.54, 1.0, 0.02]))

    model = ToyNet()
    state = model.state_dict()
    large = [name for name, value in state.items() if value.dim() >= 2]
    save_state_dict(state, tmp_path / "q.safetensors", int8=large)
    loaded = load_state_dict_file(tmp_path / "q.safetensors")
    assert loaded.keys() == state.keys()  # the scales are consumed, not returned
    for name, value in state.items():
        assert loaded[name].dtype == torch.float32
        if name in large:  # within half a quantisation step of each channel
            step = value.flatten(1).abs().amax(1) / 127
            error = (loaded[name] - value).flatten(1).abs().amax(1)
            assert bool((error <= step / 2 + 1e-7).all()) and not torch.equal(loaded[name], value)
        else:
            assert torch.equal(loaded[name], value)
    load_model_weights(ToyNet(), tmp_path / "q.safetensors")
    big = nn.Conv2d(64, 64, 3).state_dict()  # a quarter of float32, plus the header
    save_state_dict(big, tmp_path / "f.safetensors")
    save_state_dict(big, tmp_path / "g.safetensors", int8=["weight"])
    size = (tmp_path / "g.safetensors").stat().st_size
    assert size < 0.27 * (tmp_path / "f.safetensors").stat().st_size

    with pytest.raises(ValueError, match=r"int8 entries.*unknown \['nope'\]"):
        save_state_dict(state, tmp_path / "x.safetensors", int8=["nope"])
    bias = next(name for name, value in state.items() if value.dim() == 1)
    with pytest.raises(ValueError, match=rf"unfit \['{bias}'\]"):
        save_state_dict(state, tmp_path / "x.safetensors", int8=[bias])
    import safetensors.torch

    q, _ = quantize_int8(state[large[0]])
    broken = {**state, large[0]: q, large[0] + INT8_SCALE_SUFFIX: torch.ones(1)}  # one scale

    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in broken.items()},
        str(tmp_path / "b.safetensors"),
        metadata={"structvision_int8": json.dumps([large[0]])},
    )
    with pytest.raises(CheckpointError, match=rf"b\.safetensors.*{large[0]}.*per-channel scale"):
        load_state_dict_file(tmp_path / "b.safetensors")


def test_key_and_shape_errors_name_the_problem(tmp_path):
    save_state_dict(
        {"conv.weight": torch.zeros(8, 3, 3, 3), "extra.bias": torch.zeros(2)},
        tmp_path / "w.safetensors",
    )
    with pytest.raises(
        CheckpointError, match=r"w\.safetensors.*missing.*conv\.bias.*unexpected.*extra\.bias"
    ):
        load_model_weights(ToyNet(), tmp_path / "w.safetensors")
    state = ToyNet().state_dict()
    state["head.weight"] = torch.zeros(5, 8)
    save_state_dict(state, tmp_path / "s.safetensors")
    with pytest.raises(
        CheckpointError, match=r"head\.weight: checkpoint \(5, 8\) vs model \(4, 8\)"
    ):
        load_model_weights(ToyNet(), tmp_path / "s.safetensors")


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")
    folder = _save(tmp_path / "checkpoints", ToyNet(), step=1)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(folder)
    folder = _save(tmp_path / "checkpoints", ToyNet(), step=2)
    torch.save({"step": 2, "evil": nn.Linear(1, 1)}, folder / "trainer.pt")  # needs full pickle
    with pytest.raises(
        CheckpointError, match=r"trainer\.pt is refused .*Linear.*save_file"
    ) as refused:
        load_checkpoint(folder)
    assert "weights_only=False" not in str(refused.value)  # never advise the unsafe load
    (folder / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"trainer\.pt is not a readable torch.save file"):
        load_checkpoint(folder)
    (folder / "trainer.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"trainer\.pt"):
        load_checkpoint(folder)


def test_interrupted_save_is_ignored_then_cleaned(tmp_path):
    checkpoints_dir = tmp_path / "checkpoints"
    _save(checkpoints_dir, ToyNet(), step=4)
    # what a run killed while writing step 9 leaves behind: a partial temporary folder
    leftover = checkpoints_dir / ".tmp-step_000009-4242-deadbeef"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 10)
    assert find_latest_checkpoint(checkpoints_dir).name == "step_000004"
    assert resolve_checkpoint(tmp_path).name == "step_000004"
    # an incomplete step folder (e.g. copied by hand) is not picked either
    (checkpoints_dir / "step_000010").mkdir()
    (checkpoints_dir / "LATEST").write_text("step_000010\n")
    assert find_latest_checkpoint(checkpoints_dir).name == "step_000004"
    _save(checkpoints_dir, ToyNet(), step=5)
    assert not leftover.exists()
    assert (checkpoints_dir / "LATEST").read_text().strip() == "step_000005"


def test_pruning_keeps_newest_and_resaving_replaces(tmp_path):
    checkpoints_dir = tmp_path / "checkpoints"
    model = ToyNet()
    for step in (1, 2, 3, 4):
        _save(checkpoints_dir, model, step=step, keep=2)
    assert sorted(p.name for p in checkpoints_dir.iterdir()) == [
        "LATEST",
        "step_000003",
        "step_000004",
    ]
    with torch.no_grad():
        model.head.bias.fill_(3.0)
    _save(checkpoints_dir, model, step=4, keep=2)  # same step again: replaced whole
    state_dict, _, _ = load_checkpoint(checkpoints_dir / "step_000004")
    assert torch.equal(state_dict["head.bias"], torch.full((4,), 3.0))
    assert json.loads((checkpoints_dir / "step_000004" / "config.json").read_text())["step"] == 4
    assert not [p for p in checkpoints_dir.iterdir() if p.name.startswith(".")]


def test_pruning_sets_folders_aside_before_deleting(tmp_path, monkeypatch):
    checkpoints_dir = tmp_path / "checkpoints"
    model = ToyNet()
    for step in (1, 2):
        _save(checkpoints_dir, model, step=step)

    def killed(path, *args, **kwargs):  # the process dies inside the deletion
        (Path(path) / "model.safetensors").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(checkpoints_dir, model, step=3, keep=1)
    monkeypatch.undo()
    visible = sorted(p.name for p in checkpoints_dir.iterdir() if not p.name.startswith("."))
    assert visible == ["LATEST", "step_000002", "step_000003"]  # no half-deleted step folder
    assert all(is_complete_checkpoint(checkpoints_dir / name) for name in visible[1:])
    _save(checkpoints_dir, model, step=4, keep=1)  # the next save clears what was set aside
    assert sorted(p.name for p in checkpoints_dir.iterdir()) == ["LATEST", "step_000004"]


def test_model_file_gets_the_same_permissions_as_the_others(tmp_path):
    folder = _save(tmp_path / "checkpoints", ToyNet(), step=1)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == modes["trainer.pt"]

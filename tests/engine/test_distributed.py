"""Two real CPU processes (DDP over gloo), launched the way a user's script is launched."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_toys import ToyDataset, ToyEvaluator, ToyNet, clone_state, collate

from structvision.engine import TrainConfig, fit, read_metrics_log
from structvision.engine.checkpoint import load_state_dict_file

SCRIPT = Path(__file__).with_name("ddp_fit_script.py")


def _run_script(launcher_args, out_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, *launcher_args, str(SCRIPT), str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out_dir


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """``python script.py``: fit's fabric.launch() starts rank 1 by re-running the script."""
    return _run_script([], tmp_path_factory.mktemp("ddp"))


def test_both_ranks_hold_identical_weights_and_loss_went_down(ddp_run):
    rank0 = load_state_dict_file(ddp_run / "rank0.safetensors")
    rank1 = load_state_dict_file(ddp_run / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    train = [r for r in read_metrics_log(ddp_run / "run") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10, 12]
    assert train[-1]["total_loss"] < 0.7 * train[0]["total_loss"]
    # 2 processes x batch 3 x 2 micro-batches = 12 samples per step over 20 images
    assert train[0]["epoch"] == pytest.approx(2 * 12 / 20)


def test_evaluation_gathers_every_image_and_agrees_on_both_ranks(ddp_run):
    metrics = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert metrics[0] == metrics[1]
    assert metrics[0]["world_size"] == 2
    assert metrics[0]["num_images"] == 7 and metrics[0]["num_unique_images"] == 7
    final = json.loads((ddp_run / "run" / "metrics.json").read_text())
    assert final == {k: v for k, v in metrics[0].items() if k != "world_size"}


def test_two_processes_equal_one_process_with_the_global_batch(ddp_run, tmp_path):
    """DDP averages gradients: 2 ranks x batch 3 x accum 2 == 1 rank x batch 12 on the same data."""
    torch.set_num_threads(1)
    torch.manual_seed(100)  # the script's rank-0 initial weights
    model = ToyNet(dropout=0.0)
    config = TrainConfig(
        max_steps=12,
        batch_size=12,
        lr=0.1,
        accelerator="cpu",
        log_every=2,
        checkpoint_every=6,
        clip_grad_norm=5.0,
        progress=False,
    )
    metrics = fit(
        model=model,
        train_dataset=ToyDataset(size=20),
        config=config,
        out_dir=tmp_path,
        collate_fn=collate,
        model_config={"name": "toy"},
        val_dataset=ToyDataset(size=7, augment=False),
        evaluator_factory=ToyEvaluator,
    )
    ddp_weights = load_state_dict_file(ddp_run / "rank0.safetensors")
    for name, tensor in clone_state(model).items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-4, atol=1e-5)
    ddp_metrics = json.loads((ddp_run / "rank0.json").read_text())
    assert metrics["accuracy"] == ddp_metrics["accuracy"]
    ddp_losses = [
        r["total_loss"] for r in read_metrics_log(ddp_run / "run") if r["kind"] == "train"
    ]
    losses = [r["total_loss"] for r in read_metrics_log(tmp_path) if r["kind"] == "train"]
    assert losses == pytest.approx(ddp_losses, rel=1e-4)


def test_trainer_state_holds_the_rng_of_each_rank(ddp_run):
    state = torch.load(ddp_run / "run/checkpoints/step_000012/trainer.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])


def test_torchrun_launch_gives_the_same_run(ddp_run, tmp_path):
    """``torchrun --nproc-per-node 2 script.py``: the processes come from torchrun."""
    _run_script(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"], tmp_path)
    for rank in (0, 1):
        weights = load_state_dict_file(tmp_path / f"rank{rank}.safetensors")
        reference = load_state_dict_file(ddp_run / "rank0.safetensors")
        assert all(torch.equal(weights[k], reference[k]) for k in reference)

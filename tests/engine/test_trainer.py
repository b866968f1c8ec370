import json

import pytest
import torch
from engine_toys import ToyDataset, ToyEvaluator, ToyNet, clone_state, collate, states_equal

from structvision.engine import (
    TrainConfig,
    TrainingDiverged,
    evaluate,
    fit,
    load_checkpoint,
    lr_factor,
    read_metrics_log,
)


def _config(**changes):
    base = dict(max_steps=8, batch_size=4, lr=0.1, accelerator="cpu", log_every=1, progress=False)
    return TrainConfig(**{**base, **changes})


def _fit(model, out_dir, config, *, val=False, resume=False, train_size=24):
    return fit(
        model=model,
        train_dataset=ToyDataset(size=train_size),
        config=config,
        out_dir=out_dir,
        collate_fn=collate,
        model_config={"name": "toy"},
        val_dataset=ToyDataset(size=9, augment=False) if val else None,
        evaluator_factory=ToyEvaluator if val else None,
        resume=resume,
    )


def _train_lines(run_dir):
    return [r for r in read_metrics_log(run_dir) if r["kind"] == "train"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tmp_path, num_workers):
    config = _config(
        max_steps=8,
        batch_size=3,
        grad_accum_steps=2,
        optimizer="adamw",
        lr=0.01,
        weight_decay=0.05,
        schedule="cosine",
        warmup_steps=2,
        checkpoint_every=3,
        eval_every=3,
        clip_grad_norm=1.0,
        num_workers=num_workers,
    )
    torch.manual_seed(0)
    uninterrupted = ToyNet(dropout=0.3)
    _fit(uninterrupted, tmp_path / "a", config, val=True)

    torch.manual_seed(0)
    killed = ToyNet(dropout=0.3, crash_at_call=9)  # micro-batch 9 = first of step 5
    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit(killed, tmp_path / "b", config, val=True)
    assert (tmp_path / "b/checkpoints/LATEST").read_text().strip() == "step_000003"

    torch.manual_seed(123)  # other initial weights: they must all come from the checkpoint
    resumed = ToyNet(dropout=0.3)
    _fit(resumed, tmp_path / "b", config, val=True, resume=True)

    assert states_equal(clone_state(resumed), clone_state(uninterrupted))
    lines_a, lines_b = _train_lines(tmp_path / "a"), _train_lines(tmp_path / "b")
    assert [r["step"] for r in lines_b] == list(range(1, 9))
    assert [r["total_loss"] for r in lines_b] == [r["total_loss"] for r in lines_a]
    final_b = load_checkpoint(tmp_path / "b")[0]
    assert states_equal(final_b, clone_state(uninterrupted))


def test_gradient_accumulation_equals_larger_batch(tmp_path):
    results = []
    for batch_size, accum in ((4, 1), (2, 2), (1, 4)):
        torch.manual_seed(0)
        model = ToyNet(dropout=0.0)  # GroupNorm is per sample: no batch dependence
        config = _config(max_steps=5, batch_size=batch_size, grad_accum_steps=accum, momentum=0.9)
        _fit(model, tmp_path / f"{batch_size}x{accum}", config)
        results.append(clone_state(model))
    for other in results[1:]:
        for name, tensor in results[0].items():
            torch.testing.assert_close(other[name], tensor, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    untrained = clone_state(ToyNet(dropout=0.0))
    assert not torch.allclose(untrained["head.weight"], results[0]["head.weight"])


def _update_norm(before, after):
    return torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before)).item()


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])
def test_gradient_clipping_bounds_the_update(tmp_path, max_norm):
    torch.manual_seed(0)
    model = ToyNet(dropout=0.0)
    before = clone_state(model)
    config = _config(
        max_steps=1,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        lr=0.5,
        clip_grad_norm=max_norm,
    )
    _fit(model, tmp_path, config)
    grad_norm = _train_lines(tmp_path)[0]["grad_norm"]  # before clipping
    assert grad_norm > 1e-3
    # plain SGD: update = lr * clipped gradient
    expected = 0.5 * min(grad_norm, max_norm)
    assert _update_norm(before, clone_state(model)) == pytest.approx(expected, rel=1e-4)


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ToyNet(nan_at_call=3)
    config = _config(max_steps=10, checkpoint_every=1, keep_checkpoints=0, lr=0.01)
    with pytest.raises(TrainingDiverged, match=r"step 3: non-finite loss_cls, total") as info:
        _fit(model, tmp_path, config)
    message = str(info.value)
    assert "step_000002" in message and "lr=0.01" in message and "clip_grad_norm" in message
    assert info.value.step == 3 and info.value.bad_terms == ["loss_cls", "total"]
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["LATEST", "step_000001", "step_000002"]
    assert (checkpoints / "LATEST").read_text().strip() == "step_000002"
    state_dict, config_json, trainer_state = load_checkpoint(tmp_path)
    assert trainer_state["step"] == 2 and config_json["step"] == 2
    # the diverged step made no update: memory and checkpoint hold the weights after step 2
    assert states_equal(state_dict, clone_state(model))
    assert all(torch.isfinite(t).all() for t in state_dict.values())


def test_log_lines_final_metrics_and_run_config(tmp_path):
    torch.manual_seed(0)
    model = ToyNet()
    config = _config(
        max_steps=30,
        lr=0.1,
        log_every=5,
        eval_every=10,
        schedule="step",
        step_milestones=[20],
        warmup_steps=4,
        warmup_factor=0.25,
    )
    metrics = _fit(model, tmp_path, config, val=True)
    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == 9 and metrics["accuracy"] == 1.0  # it learned the toy task
    run_config = json.loads((tmp_path / "config.json").read_text())
    assert run_config == {"model": {"name": "toy"}, "train": config.to_dict()}

    records = read_metrics_log(tmp_path)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in evals] == [10, 20, 30]
    for record in train:
        factor = lr_factor(
            record["step"] - 1,
            schedule="step",
            max_steps=30,
            warmup_steps=4,
            warmup_factor=0.25,
            milestones=[20],
        )
        assert record["lr"] == pytest.approx(0.1 * factor)
        assert record["epoch"] == pytest.approx(record["step"] * 4 / 24)
        assert record["total_loss"] == pytest.approx(
            record["loss_cls"] + record["loss_reg"], rel=1e-5
        )
        assert record["samples_per_sec"] == pytest.approx(4 / record["sec_per_step"])
    assert train[-1]["total_loss"] < 0.5 * train[0]["total_loss"]


def test_fresh_start_refuses_to_mix_with_an_existing_run(tmp_path):
    _fit(ToyNet(), tmp_path, _config(max_steps=2))
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(ToyNet(), tmp_path, _config(max_steps=2))
    # resume=True on a finished run trains no further and keeps the weights
    model = ToyNet()
    _fit(model, tmp_path, _config(max_steps=2), resume=True)
    assert states_equal(clone_state(model), load_checkpoint(tmp_path)[0])


def test_bf16_mixed_precision_trains_float32_weights(tmp_path):
    torch.manual_seed(0)
    model = ToyNet()
    _fit(model, tmp_path, _config(max_steps=12, precision="bf16-mixed"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    train = _train_lines(tmp_path)
    assert train[-1]["total_loss"] < train[0]["total_loss"]


def test_evaluate_feeds_every_image_and_restores_mode():
    torch.manual_seed(0)
    model = ToyNet()
    dataset = ToyDataset(size=7, augment=False)
    evaluator = ToyEvaluator()
    metrics = evaluate(
        model=model,
        dataset=dataset,
        evaluator=evaluator,
        collate_fn=collate,
        device="cpu",
        batch_size=3,
    )
    assert model.training
    assert sorted(image_id for image_id, _ in evaluator.records) == list(range(7))
    model.eval()
    with torch.no_grad():
        predicted = [int(model([dataset[i][0]])[0]["labels"][0]) for i in range(7)]
    expected = sum(p == dataset[i][1]["labels"].item() for i, p in enumerate(predicted)) / 7
    assert metrics == {"accuracy": expected, "num_images": 7.0, "num_unique_images": 7.0}


def test_longer_resume_follows_the_new_schedule_from_its_first_step(tmp_path):
    # Before the fix, step 5 of the resumed run used the old schedule's final lr (0 for a
    # cosine ending at step 4) and only step 6 followed the new one.
    config = _config(max_steps=4, schedule="cosine", lr=0.1)
    _fit(ToyNet(), tmp_path, config)
    _fit(ToyNet(), tmp_path, config.replace(max_steps=8), resume=True)
    lrs = {r["step"]: r["lr"] for r in _train_lines(tmp_path)}
    for step in (5, 6, 7, 8):
        expected = 0.1 * lr_factor(step - 1, schedule="cosine", max_steps=8)
        assert lrs[step] == pytest.approx(expected), step
    assert lrs[5] > 0.01


def test_refused_resume_leaves_the_run_config_byte_for_byte(tmp_path):
    _fit(ToyNet(), tmp_path, _config(max_steps=4))
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ValueError, match="raise max_steps"):
        _fit(ToyNet(), tmp_path, _config(max_steps=2), resume=True)
    assert (tmp_path / "config.json").read_bytes() == before


def test_resume_starts_from_the_newest_complete_checkpoint_whatever_latest_says(tmp_path):
    _fit(ToyNet(), tmp_path, _config(max_steps=4, checkpoint_every=2, keep_checkpoints=0))
    # a kill between renaming step_000004 into place and updating LATEST
    (tmp_path / "checkpoints" / "LATEST").write_text("step_000002\n")
    model = ToyNet()
    _fit(model, tmp_path, _config(max_steps=4, checkpoint_every=2), resume=True)
    assert states_equal(
        clone_state(model), load_checkpoint(tmp_path / "checkpoints/step_000004")[0]
    )
    assert len(_train_lines(tmp_path)) == 4  # nothing retrained


def test_fit_records_resume_changes_in_the_run_config(tmp_path):
    _fit(ToyNet(), tmp_path, _config(max_steps=2))
    _fit(ToyNet(), tmp_path, _config(max_steps=3, log_every=2), resume=True)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["train"]["max_steps"] == 3
    assert record["history"] == [
        {"resumed_at_step": 2, "changed": {"max_steps": [2, 3], "log_every": [1, 2]}}
    ]


def test_stop_signals_leave_an_ignored_signal_ignored():
    """A background job inherits SIGINT ignored: it stays immune to it and stops on SIGTERM."""
    import os
    import signal

    from structvision.engine.signals import StopSignals

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term_before = signal.getsignal(signal.SIGTERM)
    try:
        with StopSignals(announce=False) as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # ignored: no stop request
            assert stop.signal_number is None
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signal_number == signal.SIGTERM
            assert signal.getsignal(signal.SIGTERM) is term_before  # a second one acts at once
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)

"""`fit`: the one training loop of structvision, on Lightning Fabric.

Read top to bottom, a step is: take ``grad_accum_steps`` micro-batches from the deterministic
stream (`structvision.engine.data`), run ``model(images, targets)`` to get the named losses,
stop if any is NaN/Inf, back-propagate their sum (without DDP gradient sync except on the last
micro-batch), clip, step the optimizer and the per-step learning-rate schedule. Every
``log_every`` steps a line goes to ``metrics.jsonl``; every ``eval_every`` steps the model is
evaluated; every ``checkpoint_every`` steps (and at the end) a checkpoint is written.

A run resumed from its checkpoint ends with exactly the weights of an uninterrupted run: the data
order is a function of the step, augmentations are seeded per sample, and the checkpoint holds
the optimizer, schedule, loss-scaler and every process's RNG state.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import Dataset

from structvision.engine.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    checkpoint_name,
    find_latest_checkpoint,
    load_model_weights,
    read_checkpoint_config,
    read_trainer_state,
    remove_temporary_folders,
    resolve_checkpoint,
    save_checkpoint,
)
from structvision.engine.config import TrainConfig
from structvision.engine.data import build_train_loader, move_to_device
from structvision.engine.distributed import build_fabric, gather_objects
from structvision.engine.evaluate import Evaluator, evaluate
from structvision.engine.files import write_json_atomic
from structvision.engine.metrics_log import METRICS_LOG_FILE, MetricsLog, write_final_metrics
from structvision.engine.optim import build_optimizer
from structvision.engine.progress import TrainingProgress, print_start_summary
from structvision.engine.rng import capture_rng_state, restore_rng_state, seed_all
from structvision.engine.schedule import apply_schedule, build_lr_scheduler
from structvision.engine.signals import StopSignals, TrainingInterrupted

log = logging.getLogger(__name__)

# Settings that must not change between a run and its resumption for the result to be exact.
_RESUME_EXACT_KEYS = ("seed", "batch_size", "grad_accum_steps", "optimizer", "schedule", "lr")


class TrainingDiverged(RuntimeError):
    """A loss (or the gradient norm) became NaN or Inf; training stopped before that update."""

    def __init__(self, message: str, *, step: int, bad_terms: list[str]) -> None:
        super().__init__(message)
        self.step = step
        self.bad_terms = bad_terms


def fit(
    *,
    model: nn.Module,
    train_dataset: Dataset,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    collate_fn: Callable[[list[Any]], Any],
    model_config: dict[str, Any],
    val_dataset: Dataset | None = None,
    evaluator_factory: Callable[[], Evaluator] | None = None,
    resume: bool | str | os.PathLike = False,
    run_info: dict[str, Any] | None = None,
    handle_signals: bool = True,
) -> dict[str, float]:
    """Train ``model`` for ``config.max_steps`` optimizer steps and evaluate it.

    Args:
        model: in train mode ``model(images, targets)`` returns a dict of named, already
            weighted scalar losses; in eval mode ``model(images)`` returns a list of prediction
            dicts. Its weights are updated in place (and live on the training device after).
        train_dataset: map-style dataset of ``(image, target)`` samples.
        config: the run's settings.
        out_dir: run folder; receives ``config.json``, ``metrics.jsonl``, ``metrics.json`` and
            ``checkpoints/``.
        collate_fn: turns a list of samples into ``(images, targets)``.
        model_config: JSON-serialisable description from which the model can be rebuilt; stored
            in ``config.json`` and in every checkpoint.
        val_dataset: evaluated every ``config.eval_every`` steps and at the end.
        evaluator_factory: makes a fresh evaluator for each evaluation (needed with
            ``val_dataset``).
        resume: ``False`` starts fresh (``out_dir`` must hold no checkpoint); ``True`` continues
            from the latest checkpoint in ``out_dir`` if there is one; a path continues from that
            checkpoint (folder, ``checkpoints/`` folder or run folder). A resumed run follows
            the learning-rate schedule of ``config`` (e.g. a cosine stretched to a longer
            ``max_steps``) from the step reached.
        run_info: extra JSON-serialisable keys for the run's ``config.json`` (the CLI records
            the data and the user's overrides there).
        handle_signals: on SIGINT/SIGTERM (in the main thread), finish the current step, write
            a checkpoint and raise `TrainingInterrupted`; a second signal stops at once.

    The run folder is written only once the run is accepted (a refused resume leaves
    ``config.json`` byte for byte as it was); a resume that changes settings appends them to
    ``config.json``'s ``history``.

    Returns:
        The final evaluation's flat metrics (also written to ``metrics.json``); ``{}`` without
        ``val_dataset``.

    Raises:
        TrainingDiverged: a loss became NaN/Inf; the last good checkpoint is left intact.
        TrainingInterrupted: SIGINT or SIGTERM; the checkpoint of the step reached is written.
    """
    if (val_dataset is None) != (evaluator_factory is None):
        raise ValueError("fit: val_dataset and evaluator_factory must be given together")
    fabric = build_fabric(config)
    fabric.launch()
    run_dir = Path(out_dir)
    checkpoints_dir = run_dir / "checkpoints"
    resume_from = _resume_checkpoint(resume=resume, checkpoints_dir=checkpoints_dir)
    if resume_from is None:
        _refuse_to_overwrite(checkpoints_dir)

    seed_all(config.seed + fabric.global_rank)
    model.train()
    optimizer = build_optimizer(model=model, config=config)
    scheduler = build_lr_scheduler(optimizer=optimizer, config=config)
    ddp_model, fabric_optimizer = fabric.setup(model, optimizer)
    start_step = 0
    if resume_from is not None:
        start_step = _restore(
            fabric=fabric,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            config=config,
            checkpoint=resume_from,
        )
        if start_step > config.max_steps:
            raise ValueError(
                f"cannot resume from {resume_from} (step {start_step}): config.max_steps is "
                f"{config.max_steps}; raise max_steps to train further"
            )
    # Accepted: only now is anything in the run folder written.
    if fabric.is_global_zero:
        _prepare_run_dir(run_dir=run_dir, resume_from=resume_from)
        _write_run_record(
            run_dir=run_dir,
            model_config=model_config,
            config=config,
            run_info=run_info,
            resumed_at=start_step if resume_from is not None else None,
        )
        print_start_summary(
            model=model,
            model_config=model_config,
            config=config,
            fabric=fabric,
            train_size=len(train_dataset),
            val_size=len(val_dataset) if val_dataset is not None else None,
            run_dir=run_dir,
            start_step=start_step,
            resumed_from=resume_from,
        )
    fabric.barrier()
    metrics_log = MetricsLog(run_dir=run_dir, enabled=fabric.is_global_zero)
    metrics_log.truncate_after(start_step)

    loop = _Loop(
        fabric=fabric,
        model=model,
        ddp_model=ddp_model,
        optimizer=fabric_optimizer,
        scheduler=scheduler,
        config=config,
        checkpoints_dir=checkpoints_dir,
        model_config=model_config,
        metrics_log=metrics_log,
        dataset_size=len(train_dataset),
    )
    batches = iter(
        build_train_loader(
            dataset=train_dataset,
            collate_fn=collate_fn,
            batch_size=config.batch_size,
            world_size=fabric.world_size,
            rank=fabric.global_rank,
            seed=config.seed,
            start_micro_step=start_step * config.grad_accum_steps,
            num_micro_steps=(config.max_steps - start_step) * config.grad_accum_steps,
            num_workers=config.num_workers,
            pin_memory=fabric.device.type == "cuda",
        )
    )

    def run_evaluation(step: int) -> dict[str, float]:
        metrics = evaluate(
            model=model,
            dataset=val_dataset,
            evaluator=evaluator_factory(),
            collate_fn=collate_fn,
            fabric=fabric,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
        )
        metrics_log.write({"kind": "eval", "step": step, **metrics})
        return metrics

    with StopSignals(enabled=handle_signals, announce=fabric.is_global_zero) as stop:
        loop.run(
            batches=batches,
            start_step=start_step,
            evaluate_fn=run_evaluation if val_dataset is not None else None,
            stop=stop,
        )
    if val_dataset is None:
        return {}
    final_metrics = run_evaluation(config.max_steps)
    if fabric.is_global_zero:
        write_final_metrics(run_dir, final_metrics)
    fabric.barrier()
    return final_metrics


class _Loop:
    """The training loop's state and its three jobs: step, log, checkpoint."""

    def __init__(
        self,
        *,
        fabric: Fabric,
        model: nn.Module,
        ddp_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        config: TrainConfig,
        checkpoints_dir: Path,
        model_config: dict[str, Any],
        metrics_log: MetricsLog,
        dataset_size: int,
    ) -> None:
        self.fabric = fabric
        self.model = model  # the plain module: state dict, evaluation
        self.ddp_model = ddp_model  # the Fabric/DDP wrapper: training forward
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.config = config
        self.checkpoints_dir = checkpoints_dir
        self.model_config = model_config
        self.metrics_log = metrics_log
        self.dataset_size = dataset_size
        self.samples_per_step = config.batch_size * config.grad_accum_steps * fabric.world_size
        self.data_seconds = 0.0  # waiting for batches since the last log line
        self.stop: StopSignals | None = None  # set by run()

    def run(
        self,
        *,
        batches: Iterator[Any],
        start_step: int,
        evaluate_fn: Callable[[int], dict[str, float]] | None,
        stop: StopSignals | None = None,
    ) -> None:
        """Train from ``start_step`` to ``config.max_steps``.

        Raises:
            TrainingInterrupted: a stop signal arrived; the step reached was checkpointed.
        """
        config = self.config
        self.stop = stop
        window = _LossWindow()
        with TrainingProgress(
            total=config.max_steps,
            completed=start_step,
            enabled=config.progress and self.fabric.is_global_zero,
        ) as progress:
            for step in range(start_step + 1, config.max_steps + 1):
                started = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                losses, grad_norm = self.train_step(batches=batches, step=step)
                self.scheduler.step()
                seconds = time.perf_counter() - started
                window.add(losses, seconds=seconds, grad_norm=grad_norm)
                if progress.wants_every_step:
                    progress.step(step=step, loss=float(losses["total_loss"]), lr=lr)
                if step % config.log_every == 0 or step == config.max_steps:
                    record = self.log_window(window=window, step=step, lr=lr)
                    progress.log(record)
                    window = _LossWindow()
                # every process decides alike: with several, the vote travels with the loss check
                stopping = stop is not None and (
                    stop.agreed if self.fabric.world_size > 1 else stop.signal_number is not None
                )
                if _every(step, config.checkpoint_every) or step == config.max_steps or stopping:
                    self.save(step)
                if stopping:
                    raise TrainingInterrupted(
                        step=step,
                        signal_number=stop.signal_number or signal.SIGINT,
                        checkpoint=self.checkpoints_dir / checkpoint_name(step),
                    )
                # The final evaluation is fit's job.
                eval_now = _every(step, config.eval_every) and step < config.max_steps
                if evaluate_fn is not None and eval_now:
                    progress.print(f"step {step}: {evaluate_fn(step)}")

    def train_step(
        self, *, batches: Iterator[Any], step: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """One optimizer step over ``grad_accum_steps`` micro-batches.

        Returns the loss terms averaged over the micro-batches (detached, on the device) and
        the gradient norm before clipping (``None`` without clipping).
        """
        fabric, accum = self.fabric, self.config.grad_accum_steps
        loss_sums: dict[str, torch.Tensor] = {}
        for micro_step in range(accum):
            waited = time.perf_counter()
            batch = next(batches)
            self.data_seconds += time.perf_counter() - waited
            images, targets = _unpack_batch(batch, device=fabric.device)
            with fabric.no_backward_sync(self.ddp_model, enabled=micro_step < accum - 1):
                loss_dict = self.ddp_model(images, targets)
                total_loss = self.check_finite(loss_dict=loss_dict, step=step)
                fabric.backward(total_loss / accum)
            for name, value in {**loss_dict, "total_loss": total_loss}.items():
                loss_sums[name] = loss_sums.get(name, 0.0) + value.detach().float() / accum
        grad_norm = self.clip_gradients(step=step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sums, grad_norm

    def check_finite(self, *, loss_dict: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The total loss; raises `TrainingDiverged` on every rank if any rank has NaN/Inf."""
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise ValueError(
                "the model must return a non-empty dict of named losses in train mode, got "
                f"{type(loss_dict).__name__}"
            )
        names = sorted(loss_dict)
        for name in names:
            if not isinstance(loss_dict[name], torch.Tensor) or loss_dict[name].ndim != 0:
                raise ValueError(f"loss {name!r} must be a scalar tensor, got {loss_dict[name]!r}")
        total_loss = sum(loss_dict[name].float() for name in names)
        terms = torch.stack([loss_dict[name].detach().float() for name in names] + [total_loss])
        bad_counts = (~torch.isfinite(terms.detach())).float()
        if self.fabric.world_size > 1:
            # one collective for two questions: any bad loss, and any stop signal (see run)
            vote = float(self.stop is not None and self.stop.signal_number is not None)
            counts = torch.cat([bad_counts, bad_counts.new_tensor([vote])])
            counts = self.fabric.all_reduce(counts, reduce_op="sum")
            bad_counts = counts[:-1]
            if self.stop is not None and bool(counts[-1] > 0):
                self.stop.agree()
        if bool(bad_counts.any()):
            labels = [*names, "total"]
            bad = [name for name, n in zip(labels, bad_counts.tolist(), strict=True) if n > 0]
            local = dict(zip(labels, terms.tolist(), strict=True))
            raise self.diverged(step=step, bad_terms=bad, detail=f"losses on this process: {local}")
        return total_loss

    def clip_gradients(self, *, step: int) -> torch.Tensor | None:
        """Clip the global gradient norm to ``config.clip_grad_norm``; return the norm before."""
        if self.config.clip_grad_norm is None:
            return None
        grad_norm = self.fabric.clip_gradients(
            self.ddp_model,
            self.optimizer,
            max_norm=self.config.clip_grad_norm,
            error_if_nonfinite=False,
        )
        # With an fp16 loss scaler, Inf gradients are expected: the scaler skips that step.
        uses_scaler = getattr(self.fabric.strategy.precision, "scaler", None) is not None
        if not uses_scaler and not bool(torch.isfinite(grad_norm)):
            raise self.diverged(step=step, bad_terms=["grad_norm"], detail="gradient norm")
        return grad_norm.detach()

    def diverged(self, *, step: int, bad_terms: list[str], detail: str) -> TrainingDiverged:
        latest = find_latest_checkpoint(self.checkpoints_dir)
        message = (
            f"training diverged at step {step}: non-finite {', '.join(bad_terms)} ({detail}). "
            f"No checkpoint was written from this state; the last good checkpoint is "
            f"{latest if latest is not None else 'none (no checkpoint saved yet)'}. "
            f"Hint: lower the learning rate (lr={self.config.lr}), lengthen the warm-up "
            f"(warmup_steps={self.config.warmup_steps}) or enable gradient clipping "
            f"(clip_grad_norm={self.config.clip_grad_norm})."
        )
        return TrainingDiverged(message, step=step, bad_terms=bad_terms)

    def log_window(self, *, window: _LossWindow, step: int, lr: float) -> dict[str, Any]:
        """Average the window over steps and processes and append it to ``metrics.jsonl``."""
        losses = window.mean_losses(fabric=self.fabric)
        sec_per_step = window.seconds / max(window.num_steps, 1)
        record: dict[str, Any] = {
            "kind": "train",
            "step": step,
            "epoch": step * self.samples_per_step / self.dataset_size,
            "lr": lr,
            **losses,
            "sec_per_step": sec_per_step,
            "data_sec_per_step": self.data_seconds / max(window.num_steps, 1),
            "samples_per_sec": self.samples_per_step / sec_per_step if sec_per_step > 0 else 0.0,
        }
        self.data_seconds = 0.0
        if window.grad_norms:
            record["grad_norm"] = float(torch.stack(window.grad_norms).mean())
        self.metrics_log.write(record)
        return record

    def save(self, step: int) -> None:
        """Write the checkpoint of ``step`` from rank 0 (every rank contributes its RNG state)."""
        rng_states = gather_objects(capture_rng_state(self.fabric.device))
        if self.fabric.is_global_zero:
            trainer_state = {
                "step": step,
                "world_size": self.fabric.world_size,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "precision": self.fabric.strategy.precision.state_dict(),
                "rng": rng_states,
            }
            save_checkpoint(
                checkpoints_dir=self.checkpoints_dir,
                step=step,
                state_dict=self.model.state_dict(),
                model_config=self.model_config,
                train_config=self.config.to_dict(),
                trainer_state=trainer_state,
                keep=self.config.keep_checkpoints,
            )
        self.fabric.barrier()


class _LossWindow:
    """Loss terms, time and gradient norms summed over the steps since the last log line."""

    def __init__(self) -> None:
        self.loss_sums: dict[str, torch.Tensor] = {}
        self.num_steps = 0
        self.seconds = 0.0
        self.grad_norms: list[torch.Tensor] = []

    def add(
        self, losses: dict[str, torch.Tensor], *, seconds: float, grad_norm: torch.Tensor | None
    ) -> None:
        for name, value in losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value
        self.num_steps += 1
        self.seconds += seconds
        if grad_norm is not None:
            self.grad_norms.append(grad_norm.float())

    def mean_losses(self, *, fabric: Fabric) -> dict[str, float]:
        """Mean of each term over the window's steps and over all processes."""
        names = sorted(self.loss_sums)
        means = torch.stack([self.loss_sums[name] for name in names]) / max(self.num_steps, 1)
        if fabric.world_size > 1:
            means = fabric.all_reduce(means, reduce_op="mean")
        return dict(zip(names, means.tolist(), strict=True))


def _every(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


def _unpack_batch(batch: Any, *, device: torch.device) -> tuple[Any, list[dict]]:
    """``(images, targets)`` from a collated batch, moved to ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            "collate_fn must return (images, targets); got "
            f"{type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}"
        )
    images, targets = batch
    images = images if isinstance(images, torch.Tensor) else list(images)
    return move_to_device(images, device), move_to_device(list(targets), device)


def _resume_checkpoint(*, resume: bool | str | os.PathLike, checkpoints_dir: Path) -> Path | None:
    """The checkpoint folder to resume from, or ``None`` to start fresh."""
    if resume is False or resume is None:
        return None
    if resume is True:
        return find_latest_checkpoint(checkpoints_dir)
    return resolve_checkpoint(resume)


def _refuse_to_overwrite(checkpoints_dir: Path) -> None:
    """Starting fresh over another run's checkpoints would mix two runs: refuse."""
    existing = find_latest_checkpoint(checkpoints_dir)
    if existing is not None:
        raise FileExistsError(
            f"{checkpoints_dir.parent} already holds checkpoint {existing.name}: pass resume=True "
            "to continue that run, or choose another output folder"
        )


def _prepare_run_dir(*, run_dir: Path, resume_from: Path | None) -> None:
    """Create the run folder, drop a fresh run's stale log and interrupted checkpoint saves."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is None:
        (run_dir / METRICS_LOG_FILE).unlink(missing_ok=True)
    remove_temporary_folders(run_dir / "checkpoints")


def _write_run_record(
    *,
    run_dir: Path,
    model_config: dict[str, Any],
    config: TrainConfig,
    run_info: dict[str, Any] | None,
    resumed_at: int | None,
) -> None:
    """Write ``config.json`` atomically; a resume keeps what was recorded and appends the
    settings it changed (``history``: step, ``{setting: [before, after]}``)."""
    record: dict[str, Any] = {"model": model_config, "train": config.to_dict()}
    path = run_dir / CONFIG_FILE
    previous: dict[str, Any] = {}
    if resumed_at is not None and path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = {}
    for key, value in previous.items():
        if key not in ("model", "train"):
            record[key] = value
    record.update(run_info or {})
    if previous:
        history = list(previous.get("history", []))
        before = previous.get("train") or {}
        changed = {
            key: [before.get(key), value]
            for key, value in record["train"].items()
            if before.get(key) != value
        }
        if changed:
            history.append({"resumed_at_step": resumed_at, "changed": changed})
        if history:
            record["history"] = history
    write_json_atomic(path, record)


def _restore(
    *,
    fabric: Fabric,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    config: TrainConfig,
    checkpoint: Path,
) -> int:
    """Load weights, optimizer, schedule, loss scaler and RNG state; return the step."""
    load_model_weights(model, checkpoint)
    state = read_trainer_state(checkpoint)
    trainer_path = checkpoint / "trainer.pt"
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        fabric.strategy.precision.load_state_dict(state.get("precision", {}))
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{trainer_path}: optimizer/scheduler state does not fit this model and config ({error})"
        ) from error
    step = int(state["step"])
    apply_schedule(optimizer=optimizer, scheduler=scheduler)
    _restore_rng(fabric=fabric, state=state, config=config, step=step)
    if fabric.is_global_zero:
        _warn_config_changes(
            checkpoint=checkpoint,
            config=config,
            world_size=fabric.world_size,
            saved_world=int(state.get("world_size", fabric.world_size)),
        )
        log.info("resuming from %s at step %d", checkpoint, step)
    return step


def _restore_rng(*, fabric: Fabric, state: dict[str, Any], config: TrainConfig, step: int) -> None:
    rng_states = state.get("rng", [])
    if len(rng_states) == fabric.world_size:
        restore_rng_state(rng_states[fabric.global_rank], fabric.device)
    else:  # another number of processes: a fresh but reproducible seed per rank
        seed_all(config.seed + 1_000_003 * step + fabric.global_rank)


def _warn_config_changes(
    *, checkpoint: Path, config: TrainConfig, world_size: int, saved_world: int
) -> None:
    saved = read_checkpoint_config(checkpoint).get("train") or {}
    changed = {
        key: (saved[key], getattr(config, key))
        for key in _RESUME_EXACT_KEYS
        if key in saved and saved[key] != getattr(config, key)
    }
    if saved_world != world_size:
        changed["world_size"] = (saved_world, world_size)
    if changed:
        log.warning(
            "resuming from %s with changed settings (saved, now) %s: the result will differ from "
            "an uninterrupted run",
            checkpoint,
            changed,
        )

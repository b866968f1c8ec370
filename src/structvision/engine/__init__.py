"""structvision.engine: the training loop, evaluation, checkpoints and distributed launch.

``fit`` trains any model that follows the model contract (train mode: dict of named losses;
eval mode: list of prediction dicts) on one CPU core, one GPU, or many processes with DDP via
Lightning Fabric, and resumes exactly from its checkpoints.
"""

from structvision.engine.checkpoint import (
    CheckpointError,
    find_latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    read_checkpoint_config,
    resolve_checkpoint,
    save_checkpoint,
)
from structvision.engine.config import TrainConfig
from structvision.engine.evaluate import Evaluator, evaluate
from structvision.engine.metrics_log import read_metrics_log
from structvision.engine.schedule import lr_factor
from structvision.engine.signals import TrainingInterrupted
from structvision.engine.trainer import TrainingDiverged, fit

__all__ = [
    "CheckpointError",
    "Evaluator",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "evaluate",
    "find_latest_checkpoint",
    "fit",
    "load_checkpoint",
    "load_model_weights",
    "lr_factor",
    "read_checkpoint_config",
    "read_metrics_log",
    "resolve_checkpoint",
    "save_checkpoint",
]

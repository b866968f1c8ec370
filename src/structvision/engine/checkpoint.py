"""Checkpoint folders: ``model.safetensors`` + ``config.json`` + ``trainer.pt``, written atomically.

Layout of a run's ``checkpoints/`` folder::

    checkpoints/
      step_000100/ model.safetensors  config.json  trainer.pt
      step_000200/ ...
      LATEST        # text: the folder name of the newest complete checkpoint

A checkpoint is first written to a hidden temporary sibling (``.tmp-step_000200-<pid>``) and then
renamed into place, so a killed run leaves either a complete checkpoint or a temporary folder that
is never read and is removed by the next save. Nothing is loaded with pickle's full power:
weights come from safetensors and ``trainer.pt`` is read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from structvision.engine.files import write_json_atomic, write_text_atomic
from structvision.safeload import load_tensors_file

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_FILE = "trainer.pt"
LATEST_FILE = "LATEST"
CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, TRAINER_FILE)
FORMAT_NAME = "structvision-checkpoint"
FORMAT_VERSION = 1

_STEP_DIR = re.compile(r"^step_(\d+)$")
_ALIASES_KEY = "structvision_aliases"
_INT8_KEY = "structvision_int8"
#: Suffix of the per-channel scale stored beside each weight kept in int8.
INT8_SCALE_SUFFIX = ".int8_scale"


class CheckpointError(ValueError):
    """A checkpoint file exists but its content is not what the caller needs."""


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after ``step`` optimizer steps, e.g. ``step_000123``."""
    return f"step_{step:06d}"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step encoded in a checkpoint folder's name, or ``None`` if it is not one."""
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint folder holding all three files."""
    path = Path(path)
    return checkpoint_step(path) is not None and all((path / f).is_file() for f in CHECKPOINT_FILES)


# ---------------------------------------------------------------------------------------------
# Weights (safetensors)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``(q int8, scale float32 (C,))`` with
    ``weight ~ q * scale`` along dim 0, ``|q| <= 127``; an all-zero channel gets scale 1."""
    channels = weight.detach().float().flatten(1)
    scale = channels.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(channels / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.view(weight.shape), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight ``q * scale`` of `quantize_int8`."""
    return q.float() * scale.float().view(-1, *([1] * (q.dim() - 1)))


def save_state_dict(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    int8: Sequence[str] = (),
) -> None:
    """Write ``state_dict`` to a safetensors file (not atomic on its own).

    Entries that are the same tensor under several names (tied weights) are stored once; the
    other names are recorded in the file's metadata and restored by `load_state_dict_file`.
    The floating-point entries named in ``int8`` (weights of two or more dimensions) are stored
    as `quantize_int8` gives them, a quarter of their float32 size, each with its per-channel
    scale under ``NAME + INT8_SCALE_SUFFIX``; `load_state_dict_file` returns them in float32.
    """
    unknown = [name for name in int8 if name not in state_dict]
    unfit = [
        name
        for name in int8
        if name in state_dict
        and (not state_dict[name].is_floating_point() or state_dict[name].dim() < 2)
    ]
    if unknown or unfit:
        raise ValueError(
            f"save_state_dict: int8 entries must be floating-point weights of 2+ dimensions in "
            f"the state dict; unknown {unknown[:5]}, unfit {unfit[:5]}"
        )
    state_dict = dict(state_dict)
    for name in int8:
        state_dict[name], state_dict[name + INT8_SCALE_SUFFIX] = quantize_int8(state_dict[name])
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"save_state_dict: entry {name!r} is a {type(tensor).__name__}, not a tensor"
            )
        identity = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.dtype,
        )
        if identity in seen and tensor.numel() > 0:
            aliases[name] = seen[identity]
            continue
        seen[identity] = name
        # A private contiguous CPU copy: safetensors refuses tensors that share memory.
        tensors[name] = tensor.detach().to("cpu", copy=True).contiguous()
    metadata = {_ALIASES_KEY: json.dumps(aliases), _INT8_KEY: json.dumps(list(int8))}
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file written by `save_state_dict` into a CPU state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights file not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state_dict = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        aliases = json.loads(metadata.get(_ALIASES_KEY, "{}"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: metadata {_ALIASES_KEY!r} is not valid JSON") from error
    try:
        quantized = json.loads(metadata.get(_INT8_KEY, "[]"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: metadata {_INT8_KEY!r} is not valid JSON") from error
    for name in quantized:
        q, scale = state_dict.get(name), state_dict.pop(name + INT8_SCALE_SUFFIX, None)
        if q is None or scale is None or q.dtype != torch.int8 or scale.numel() != len(q):
            raise CheckpointError(
                f"{path}: int8 weight {name!r} lacks its int8 values or its per-channel scale"
            )
        state_dict[name] = dequantize_int8(q, scale)
    for alias, source in aliases.items():
        if source not in state_dict:
            raise CheckpointError(f"{path}: tied weight {alias!r} refers to missing {source!r}")
        state_dict[alias] = state_dict[source]
    return state_dict


def check_state_dict_matches(
    *, state_dict: dict[str, torch.Tensor], model: nn.Module, source: str
) -> None:
    """Raise `CheckpointError` naming missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), first: {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first: {unexpected[:5]}")
    mismatched = [
        f"{name}: checkpoint {tuple(state_dict[name].shape)} vs model {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state_dict and state_dict[name].shape != tensor.shape
    ]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es), first: {mismatched[:5]}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def load_model_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load weights into ``model`` from a checkpoint folder, run folder or ``.safetensors`` file.

    Keys and shapes must match exactly; otherwise a `CheckpointError` names the file and the
    first offending keys.
    """
    path = Path(path)
    weights_path = path if path.suffix == ".safetensors" else resolve_checkpoint(path) / MODEL_FILE
    state_dict = load_state_dict_file(weights_path)
    check_state_dict_matches(state_dict=state_dict, model=model, source=str(weights_path))
    model.load_state_dict(state_dict)


# ---------------------------------------------------------------------------------------------
# Folders


def find_latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``checkpoints_dir``, or ``None``.

    The complete ``step_*`` folder with the highest step, whatever ``LATEST`` says: a run killed
    between renaming a new checkpoint into place and updating ``LATEST`` still resumes from the
    new one. ``LATEST`` is kept for people and other tools. Temporary folders of interrupted
    saves and folders set aside for deletion are never returned.
    """
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return None
    complete = [p for p in checkpoints_dir.iterdir() if p.is_dir() and is_complete_checkpoint(p)]
    return max(complete, key=checkpoint_step) if complete else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a checkpoint folder, a ``checkpoints/`` folder or a run folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {path}")
    if (path / MODEL_FILE).is_file():
        return path
    for checkpoints_dir in (path, path / "checkpoints"):
        latest = find_latest_checkpoint(checkpoints_dir)
        if latest is not None:
            return latest
    raise FileNotFoundError(
        f"no checkpoint found at {path}: expected a folder with {MODEL_FILE}, or a run/checkpoints "
        f"folder holding complete step_* checkpoints ({', '.join(CHECKPOINT_FILES)})"
    )


def remove_temporary_folders(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary folders left by interrupted saves; return what was removed."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    leftovers = [
        p for p in checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".old-"))
    ]
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    return leftovers


def prune_checkpoints(checkpoints_dir: str | os.PathLike, *, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``step_*`` folders (``keep=0`` keeps all).

    The newest complete checkpoint is never deleted. Each doomed folder is first renamed aside
    (a hidden ``.old-`` name that is never read) and only then deleted, so a run killed while
    pruning never leaves a half-deleted ``step_*`` folder. Returns the deleted folders.
    """
    if keep <= 0:
        return []
    checkpoints_dir = Path(checkpoints_dir)
    latest = find_latest_checkpoint(checkpoints_dir)
    folders = sorted(
        (p for p in checkpoints_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
        key=checkpoint_step,
    )
    doomed = [p for p in folders[: max(len(folders) - keep, 0)] if p != latest]
    for folder in doomed:
        aside = folder.with_name(f".old-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(folder, aside)
        shutil.rmtree(aside)
    return doomed


def save_checkpoint(
    *,
    checkpoints_dir: str | os.PathLike,
    step: int,
    state_dict: dict[str, torch.Tensor],
    model_config: dict[str, Any],
    train_config: dict[str, Any] | None,
    trainer_state: dict[str, Any],
    keep: int = 0,
) -> Path:
    """Write the checkpoint of ``step`` atomically, point ``LATEST`` at it, prune old ones.

    Args:
        checkpoints_dir: the run's ``checkpoints/`` folder (created if missing).
        step: optimizer steps taken; names the folder ``step_{step:06d}``.
        state_dict: model weights (tied weights are stored once).
        model_config: JSON-serialisable description from which the model can be rebuilt.
        train_config: the `TrainConfig` as a dict, or ``None``.
        trainer_state: optimizer/scheduler/RNG state made of tensors, numbers, strings, lists
            and dicts only, so that it loads with ``weights_only=True``.
        keep: how many checkpoints to keep (0: all).

    Returns:
        The final checkpoint folder.
    """
    checkpoints_dir = Path(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    remove_temporary_folders(checkpoints_dir)
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "step": step,
        "model": model_config,
        "train": train_config,
    }
    try:
        config_text = json.dumps(config, indent=2) + "\n"
    except TypeError as error:
        raise TypeError(
            f"save_checkpoint: model_config must be JSON-serialisable ({error})"
        ) from error
    name = checkpoint_name(step)
    final_dir = checkpoints_dir / name
    tmp_dir = checkpoints_dir / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir()
    save_state_dict(state_dict, tmp_dir / MODEL_FILE)
    (tmp_dir / CONFIG_FILE).write_text(config_text, encoding="utf-8")
    torch.save(trainer_state, tmp_dir / TRAINER_FILE)
    for path in tmp_dir.iterdir():  # safetensors writes 0600; match the run's other files
        os.chmod(path, default_file_mode())
    _fsync_folder_files(tmp_dir)
    _replace_folder(tmp_dir, final_dir)
    write_text_atomic(checkpoints_dir / LATEST_FILE, name + "\n")
    prune_checkpoints(checkpoints_dir, keep=keep)
    return final_dir


def default_file_mode() -> int:
    """The permission bits a newly created file gets here (``0o666`` less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder_files(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _replace_folder(src: Path, dst: Path) -> None:
    """Rename folder ``src`` to ``dst``; an existing ``dst`` is moved aside first, then deleted."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".old-{dst.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Loading


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of the checkpoint at ``path`` (see `resolve_checkpoint`)."""
    config_path = resolve_checkpoint(path) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"checkpoint config not found: {config_path}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path}: not valid JSON ({error})") from error
    missing = [
        key for key in ("step", "model") if not isinstance(config, dict) or key not in config
    ]
    if missing:
        raise CheckpointError(f"{config_path}: missing key(s) {missing}")
    return config


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer.pt`` of the checkpoint at ``path``, loaded with ``weights_only=True``."""
    trainer_path = resolve_checkpoint(path) / TRAINER_FILE
    if not trainer_path.is_file():
        raise FileNotFoundError(f"checkpoint trainer state not found: {trainer_path}")
    try:
        state = load_tensors_file(trainer_path, what="trainer state")
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{trainer_path}: expected a dict with a 'step' entry")
    return state


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint: ``(state_dict, config, trainer_state)``, all on the CPU.

    ``path`` may be a checkpoint folder, a ``checkpoints/`` folder or a run folder (the latest
    complete checkpoint is used). ``config`` is the parsed ``config.json``: ``step``, ``model``
    (the model's rebuild description) and ``train`` (the `TrainConfig` dict).
    """
    folder = resolve_checkpoint(path)
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {folder} is incomplete: missing {missing}")
    state_dict = load_state_dict_file(folder / MODEL_FILE)
    config = read_checkpoint_config(folder)
    trainer_state = read_trainer_state(folder)
    return state_dict, config, trainer_state


def write_run_config(
    *, run_dir: str | os.PathLike, model_config: dict[str, Any], train_config: dict[str, Any]
) -> None:
    """Write the run folder's ``config.json`` (model description + train config) atomically."""
    write_json_atomic(Path(run_dir) / CONFIG_FILE, {"model": model_config, "train": train_config})

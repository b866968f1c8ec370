"""Starting a model's small backbone from a trained classifier: the field's "ImageNet
initialisation", with a classifier trained on built-in data (recipe ``classifier``).

Every detector and segmenter of the small family builds its trunk with
:func:`~structvision.models.backbones.small_backbone`, and the classifier keeps that trunk under
``backbone.``. :func:`init_small_backbone` copies the classifier's trunk into a model's
:class:`~structvision.models.backbones.SmallBackbone`: every weight the model's trunk has must
be in the classifier with the same shape, and the classifier may hold no other weights for the
stages the model builds (a different ``width`` or ``norm`` is refused, naming the options);
stages the model does not build (e.g. ``c5`` of a C4 model) are ignored.

A source is ``zoo:NAME``, a classifier run or checkpoint folder, or a state-dict file
(``.safetensors`` or a ``torch.save`` file read with ``weights_only=True``), with or without the
``backbone.`` prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from structvision.models.backbones import SmallBackbone

__all__ = [
    "DEFAULT_TRUNK",
    "NO_PRETRAINING",
    "init_small_backbone",
    "read_trunk_state_dict",
    "start_from_classifier",
    "with_default_trunk",
]

#: The values of ``model.pretrained`` that train the trunk from scratch.
NO_PRETRAINING = ("none", "scratch", "")

#: The trunk the small models' recipes start from unless told otherwise: the zoo classifier
#: (width 32, group norm), trained by the ``classifier`` recipe on ``shapes-cls``.
DEFAULT_TRUNK = "zoo:classifier_shapes"
_DEFAULT_TRUNK_SHAPE = {"width": 32, "norm": "group"}

_PREFIX = "backbone."


def _source_file(source: str, what: str) -> Path:
    from structvision.engine.checkpoint import MODEL_FILE, resolve_checkpoint
    from structvision.zoo import is_zoo_name, zoo_path

    if is_zoo_name(source):
        return zoo_path(source) / MODEL_FILE
    path = Path(source)
    if path.is_dir():
        try:
            return resolve_checkpoint(path) / MODEL_FILE
        except Exception as error:
            raise FileNotFoundError(
                f"{what} {source}: not a run or checkpoint folder ({error})"
            ) from None
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {source} does not exist (give zoo:NAME, a classifier run or checkpoint "
            f"folder, or a state-dict file; 'none' trains from scratch)"
        )
    return path


def read_trunk_state_dict(
    source: str | os.PathLike, *, what: str = "model.pretrained"
) -> dict[str, Tensor]:
    """The small-backbone weights held by ``source`` (see the module docstring), keys without
    the ``backbone.`` prefix. Errors name ``what`` and the file."""
    from structvision.convert import read_state_dict_file

    path = _source_file(str(source), what)
    state_dict = read_state_dict_file(path, what=what)
    if any(key.startswith(_PREFIX) for key in state_dict):
        state_dict = {
            key.removeprefix(_PREFIX): value
            for key, value in state_dict.items()
            if key.startswith(_PREFIX)
        }
    if not any(key.startswith("stem.") for key in state_dict):
        raise ValueError(
            f"{what} {path} holds no small-backbone weights (no 'stem.*' or 'backbone.stem.*' "
            f"keys): give a classifier trained with the 'classifier' recipe"
        )
    return state_dict


def with_default_trunk(kwargs: dict) -> dict:
    """``kwargs`` (a small model's options) with ``pretrained`` set to `DEFAULT_TRUNK` unless
    the user chose a trunk (or ``none``) or a ``width`` / ``norm`` the zoo trunk does not have,
    in which case the model trains from scratch as asked."""
    if "pretrained" in kwargs:
        return kwargs
    if any(str(kwargs.get(k, v)) != str(v) for k, v in _DEFAULT_TRUNK_SHAPE.items()):
        return kwargs
    return {**kwargs, "pretrained": DEFAULT_TRUNK}


def _find_small_backbone(model: nn.Module, what: str) -> SmallBackbone:
    trunks = [module for module in model.modules() if isinstance(module, SmallBackbone)]
    if len(trunks) != 1:
        raise ValueError(
            f"{what} starts a small backbone, and this model has {len(trunks)} "
            f"(ResNet and VGG trunks start from ImageNet weights with model.weights_path)"
        )
    return trunks[0]


def _in_unbuilt_stage(key: str, built: int) -> bool:
    """Whether ``key`` (``stages.I.…``) belongs to a stage at or past index ``built``."""
    head, _, rest = key.partition(".")
    index = rest.partition(".")[0]
    return head == "stages" and index.isdigit() and int(index) >= built


def init_small_backbone(
    model: nn.Module, source: str | os.PathLike, *, what: str = "model.pretrained"
) -> nn.Module:
    """Copy the classifier trunk in ``source`` into ``model``'s small backbone; returns
    ``model``. Raises ``ValueError`` naming ``what`` and the file when the trunks differ."""
    trunk = _find_small_backbone(model, what)
    state_dict = read_trunk_state_dict(source, what=what)
    own = trunk.state_dict()
    counted = [key for key in own if not key.endswith("num_batches_tracked")]
    missing = [key for key in counted if key not in state_dict]
    unexpected = [
        key
        for key in state_dict
        if key not in own
        and not key.endswith("num_batches_tracked")
        and not _in_unbuilt_stage(key, len(trunk.stages))
    ]
    mismatched = [
        f"{key}: {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in counted
        if key in state_dict and state_dict[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} weight(s) missing, first: {missing[:3]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unknown weight(s), first: {unexpected[:3]}")
        if mismatched:
            problems.append(f"{len(mismatched)} of another shape, first: {mismatched[:3]}")
        raise ValueError(
            f"{what} {source} does not fit this model's backbone ({'; '.join(problems)}): "
            f"was it trained with the same model.width and model.norm?"
        )
    with torch.no_grad():
        for key in counted:
            own[key].copy_(state_dict[key].to(own[key].dtype))
    return model


def start_from_classifier(
    model: nn.Module, pretrained: str | None, *, arch: str, small_archs: tuple[str, ...]
) -> nn.Module:
    """A recipe's ``model.pretrained``: ``model`` (built as ``arch``) with its small backbone
    from the classifier ``pretrained``; ``None`` or ``"none"`` leaves it as built. An
    architecture outside ``small_archs`` has no small backbone and is refused by name."""
    if pretrained is None or str(pretrained).lower() in NO_PRETRAINING:
        return model
    if arch not in small_archs:
        raise ValueError(
            f"model.pretrained starts the small backbone of model.arch {', '.join(small_archs)}; "
            f"{arch!r} starts from ImageNet weights with model.weights_path"
        )
    return init_small_backbone(model, str(pretrained))

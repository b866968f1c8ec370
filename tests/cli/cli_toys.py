"""A recipe for CLI tests: a tiny contract-following detector whose initial weights may come
from a file (``model.weights_path``), registered as ``init_net`` by the fixture below."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from structvision import tasks
from structvision.data.collate import collate_detection
from structvision.data.spec import build_dataset
from structvision.engine import TrainConfig
from structvision.evaluation import COCOEvaluator

DATA = "shapes:image_size=48,num_images=6,max_objects=2"


class InitNet(nn.Module):
    """A contract-following toy whose initial weights may come from ``weights_path``."""

    def __init__(self, *, num_classes: int, width: int = 4, weights_path: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1)
        self.box_head = nn.Linear(width, 4)
        self.cls_head = nn.Linear(width, num_classes + 1)
        if weights_path is not None:
            self.load_state_dict(load_file(weights_path))

    def forward(self, images, targets=None):
        x = torch.stack([F.interpolate(im[None], size=(16, 16))[0] for im in images])
        features = F.relu(self.conv(x)).mean(dim=(2, 3))
        sizes = torch.tensor([[im.shape[2], im.shape[1]] * 2 for im in images], dtype=x.dtype)
        boxes = torch.sigmoid(self.box_head(features)).sort(dim=1).values * sizes
        logits = self.cls_head(features)
        if not self.training:
            scores, labels = logits[:, 1:].softmax(dim=1).max(dim=1)
            return [
                {
                    "boxes": boxes[i : i + 1],
                    "labels": labels[i : i + 1] + 1,
                    "scores": scores[i : i + 1],
                }
                for i in range(len(images))
            ]
        gt_labels = torch.stack(
            [t["labels"][0] if len(t["labels"]) else torch.tensor(0) for t in targets]
        )
        return {"loss_cls": F.cross_entropy(logits, gt_labels), "loss_box": boxes.mean() * 1e-3}


def _setup(*, data: str, val_data: str | None, model_overrides: dict) -> tasks.Task:
    train_dataset = build_dataset(data, split="train")
    kwargs = {"num_classes": len(train_dataset.categories), **model_overrides}
    return tasks.Task(
        model=InitNet(**kwargs),
        model_config={
            "recipe": "init_net",
            "kwargs": kwargs,
            "class_names": ["__background__", *(c["name"] for c in train_dataset.categories)],
        },
        train_dataset=train_dataset,
        val_dataset=build_dataset(val_data or data, split="val"),
        collate_fn=collate_detection,
        evaluator_factory=lambda: COCOEvaluator(iou_types=("bbox",)),
        train_config=TrainConfig(max_steps=4, batch_size=2, lr=0.05, log_every=1, progress=True),
    )


@pytest.fixture
def init_net_recipe(monkeypatch):
    recipe = tasks.Recipe(
        name="init_net",
        summary="toy with an initial-weights file",
        setup=_setup,
        build_model=InitNet,
        build_evaluator=lambda dataset: COCOEvaluator(iou_types=("bbox",)),
        collate_fn=collate_detection,
        model_options=("width", "weights_path"),
    )
    monkeypatch.setitem(tasks.RECIPES, "init_net", recipe)
    return recipe

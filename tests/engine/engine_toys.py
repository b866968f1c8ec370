# ruff: noqa: NPY002  (these tests exercise numpy's global generator on purpose)
"""A tiny dataset, model and evaluator that follow structvision's contracts, for engine tests.

The dataset draws augmentations from torch, numpy and python's global RNGs, and the model uses
dropout, so exact-resume tests fail if any generator is not handled.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

NUM_CLASSES = 3
IMAGE_SIZE = 8


class ToyDataset(torch.utils.data.Dataset):
    """``(image (3, 8, 8) in [0, 1], {"labels": (1,), "image_id": ()})``; class = colour channel."""

    def __init__(self, *, size: int = 24, augment: bool = True) -> None:
        self.size = size
        self.augment = augment

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        label = index % NUM_CLASSES + 1
        base = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE)
        base[label - 1] = 0.6
        base[:, : 1 + index % IMAGE_SIZE, :] += 0.2
        if self.augment:
            base = base + 0.1 * torch.rand(3, IMAGE_SIZE, IMAGE_SIZE)  # torch global RNG
            base = base + float(np.random.uniform(0.0, 0.05))  # numpy global RNG
            if random.random() < 0.5:  # python global RNG
                base = base.flip(-1)
        target = {"labels": torch.tensor([label]), "image_id": torch.tensor(index)}
        return base.clamp(0, 1), target


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class ToyNet(nn.Module):
    """Conv → pool → dropout → linear classifier over ``NUM_CLASSES + 1`` classes.

    Train mode returns ``{"loss_cls", "loss_reg"}``; eval mode one ``{"labels", "scores"}`` per
    image. ``nan_at_call`` / ``crash_at_call`` make the n-th training forward (1-based) return a
    NaN loss / raise, to test the divergence guard and resuming after a killed run.
    """

    def __init__(
        self,
        *,
        dropout: float = 0.2,
        with_norm: bool = True,
        nan_at_call: int | None = None,
        crash_at_call: int | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(2, 8) if with_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8, NUM_CLASSES + 1)
        self.nan_at_call = nan_at_call
        self.crash_at_call = crash_at_call
        self.train_calls = 0

    def logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(images)  # (B, 3, H, W)
        x = F.relu(self.norm(self.conv(x)))
        x = self.dropout(x.mean(dim=(2, 3)))  # (B, 8)
        return self.head(x)  # (B, K + 1)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        logits = self.logits(images)
        if not self.training:
            # Draw from the global RNG as a sampling model would: evaluating during training
            # must not change what training draws next.
            torch.rand(1)
            probs = logits.float().softmax(dim=1)
            scores, labels = probs.max(dim=1)
            return [
                {"labels": labels[i : i + 1], "scores": scores[i : i + 1]}
                for i in range(len(images))
            ]
        self.train_calls += 1
        if self.crash_at_call == self.train_calls:
            raise RuntimeError("simulated kill")
        gt_labels = torch.cat([t["labels"] for t in targets])  # (B,)
        loss_cls = F.cross_entropy(logits, gt_labels)
        if self.nan_at_call == self.train_calls:
            loss_cls = loss_cls * float("nan")
        return {"loss_cls": loss_cls, "loss_reg": 0.01 * logits.pow(2).mean()}


class ToyEvaluator:
    """Accuracy of the top label; one record ``(image_id, correct)`` per image."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bool]] = []

    def update(self, targets: list[dict], predictions: list[dict]) -> None:
        for target, prediction in zip(targets, predictions, strict=True):
            correct = int(prediction["labels"][0]) == int(target["labels"][0])
            self.records.append((int(target["image_id"]), correct))

    def compute(self) -> dict[str, float]:
        image_ids = [image_id for image_id, _ in self.records]
        return {
            "accuracy": sum(correct for _, correct in self.records) / max(len(self.records), 1),
            "num_images": float(len(self.records)),
            "num_unique_images": float(len(set(image_ids))),
        }


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

"""benchmarks/detection_errors.py sorts detections into Hoiem-style error types."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "detection_errors.py"


def _module():
    spec = importlib.util.spec_from_file_location("detection_errors", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_error_type_on_a_hand_built_image():
    classify = _module().classify_detections
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
        "labels": torch.tensor([1, 2]),
    }
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # object 0, its class: correct
            [0.0, 0.0, 10.0, 9.0],  # object 0 again, lower score: duplicate
            [20.0, 20.0, 30.0, 30.0],  # object 1 with class 1: wrong class
            [0.0, 5.0, 10.0, 20.0],  # IoU 1/3 with object 0: localisation
            [50.0, 50.0, 60.0, 60.0],  # nothing there: background
        ]
    )
    labels = torch.tensor([1, 1, 1, 1, 1])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.7, 0.6])
    kinds, found_same, found_any = classify(boxes, labels, scores, target)
    assert kinds == [
        (scores[2].item(), "wrong_class"),
        (scores[0].item(), "correct"),
        (scores[1].item(), "duplicate"),
        (scores[3].item(), "localisation"),
        (scores[4].item(), "background"),
    ]
    assert found_same.tolist() == [True, False] and found_any.tolist() == [True, True]

    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    kinds, found_same, _ = classify(boxes[:1], labels[:1], scores[:1], empty)
    assert kinds == [(scores[0].item(), "background")] and found_same.numel() == 0

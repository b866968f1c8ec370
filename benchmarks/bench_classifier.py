"""The classifier's top-1 accuracy and confusion matrix on held-out ``shapes-cls`` crops.

Evaluates a trained ``classifier`` run (or ``zoo:NAME``) on the validation split and prints one
JSON object (top-1, mean per-class accuracy, the confusion matrix, the accuracy on object crops
by the object's size in its scene) and the matrix as a Markdown table, rows the true classes.

    structvision train classifier --data shapes-cls --val-data shapes-cls:num_images=1000 \\
        --out runs/classifier_shapes
    python benchmarks/bench_classifier.py runs/classifier_shapes --data shapes-cls:num_images=2000
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from structvision.data.spec import build_dataset
from structvision.evaluation import ClassificationEvaluator
from structvision.tasks import load_trained_model

#: Upper edges (pixels, the longer side of the object's box in its 128-pixel scene).
SIZE_EDGES = (12, 20, 32)


def _size_bucket(size: float) -> str:
    low = 0
    for edge in SIZE_EDGES:
        if size < edge:
            return f"{low}-{edge} px"
        low = edge
    return f">= {low} px"


def _order(bucket: str) -> int:
    return int(bucket.split("-")[0].removeprefix(">= ").split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a classifier run or checkpoint folder, or zoo:NAME")
    parser.add_argument("--data", default="shapes-cls:num_images=2000")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, model, model_config = load_trained_model(args.run)
    model = model.cpu().eval()
    dataset = build_dataset(args.data, split="val")
    names = list(model_config["class_names"])
    evaluator = ClassificationEvaluator(num_classes=len(names))
    by_size: dict[str, list[int]] = {}  # size bucket -> [correct, total] over object crops
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(dataset), 100):
            samples = [dataset[i] for i in range(start, min(start + 100, len(dataset)))]
            images = torch.stack([image for image, _ in samples])
            predictions = model(images)
            evaluator.update([target for _, target in samples], predictions)
            for (_, target), prediction in zip(samples, predictions, strict=True):
                if int(target["label"]) > 0:
                    bucket = _size_bucket(float(target["object_size"]))
                    counts = by_size.setdefault(bucket, [0, 0])
                    counts[0] += int(prediction["label"]) == int(target["label"])
                    counts[1] += 1
    seconds = time.perf_counter() - started
    matrix = evaluator.confusion_matrix()
    result = {
        **evaluator.compute(),
        "class_names": names,
        "confusion_matrix": matrix.tolist(),
        "object_accuracy_by_size": {
            bucket: {"accuracy": correct / total, "crops": total}
            for bucket, (correct, total) in sorted(by_size.items(), key=lambda kv: _order(kv[0]))
        },
        "crops_per_sec": len(dataset) / seconds,
    }
    print(json.dumps(result))
    print()
    print("| true \\ predicted | " + " | ".join(names) + " | recall |")
    print("| --- " * (len(names) + 2) + "|")
    for name, row in zip(names, matrix.tolist(), strict=True):
        recall = row[names.index(name)] / max(sum(row), 1)
        print(f"| {name} | " + " | ".join(map(str, row)) + f" | {recall:.3f} |")


if __name__ == "__main__":
    main()

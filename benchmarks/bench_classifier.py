"""The classifier's top-1 accuracy and confusion matrix on held-out ``shapes-cls`` crops.

Evaluates a trained ``classifier`` run (or ``zoo:NAME``) on the validation split and prints one
JSON object (top-1, mean per-class accuracy, the confusion matrix) and the matrix as a Markdown
table, rows the true classes.

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
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(dataset), 100):
            samples = [dataset[i] for i in range(start, min(start + 100, len(dataset)))]
            images = torch.stack([image for image, _ in samples])
            evaluator.update([target for _, target in samples], model(images))
    seconds = time.perf_counter() - started
    matrix = evaluator.confusion_matrix()
    result = {
        **evaluator.compute(),
        "class_names": names,
        "confusion_matrix": matrix.tolist(),
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

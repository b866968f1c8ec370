"""Speed of the built-in ``shapes`` generator, single process, one core.

Prints one JSON object: for each image size, images per second measured by wall-clock time
and by this process's CPU time (the CPU figure is the one to trust on a shared machine), and
the mean number of objects per image.

    python benchmarks/bench_shapes.py                       # 2000 at 128 px, 200 at 512 px
    python benchmarks/bench_shapes.py --sizes 128 --num-images 500
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import cv2
import torch

from structvision.data.synthetic import ShapesDataset


def measure(*, image_size: int, num_images: int, seed: int = 0) -> dict[str, float]:
    """Generate ``num_images`` samples of ``image_size`` px; return rates and object counts."""
    dataset = ShapesDataset(num_images=num_images, seed=seed, image_size=image_size)
    dataset[0]  # warm caches (pixel grids, grain tiles) outside the timed loop
    num_objects = 0
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for index in range(num_images):
        _, target = dataset[index]
        num_objects += len(target["labels"])
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    return {
        "image_size": image_size,
        "num_images": num_images,
        "images_per_s_wall": round(num_images / wall, 1),
        "images_per_s_cpu": round(num_images / cpu, 1),
        "ms_per_image_cpu": round(1000 * cpu / num_images, 3),
        "objects_per_image": round(num_objects / num_images, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument(
        "--num-images", type=int, nargs="+", default=None, help="per size (default 2000, 200)"
    )
    args = parser.parse_args()
    counts = args.num_images or [2000 if size <= 128 else 200 for size in args.sizes]
    if len(counts) == 1:
        counts = counts * len(args.sizes)
    if len(counts) != len(args.sizes):
        parser.error(f"--num-images takes 1 or {len(args.sizes)} values, got {len(counts)}")
    torch.set_num_threads(1)  # one core: no intra-op threads in torch or OpenCV
    cv2.setNumThreads(1)
    results = [measure(image_size=s, num_images=n) for s, n in zip(args.sizes, counts, strict=True)]
    report = {
        "benchmark": "shapes_generator",
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

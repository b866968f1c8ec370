"""Dense CRF speed and agreement: structvision's ``dense_crf`` vs pydensecrf (when importable).

Same image, unary (``-log(clip(probs, 1e-5))``) and parameters (gaussian sxy=3 w=3, bilateral
sxy=80 srgb=13 w=10), 10 iterations, 500x375 pixels, 21 labels. Prints one JSON object: our CPU
time (and CUDA time when a GPU is present), pydensecrf's time, the ratio, the fraction of pixels
with the same argmax and max |dQ|. pydensecrf is optional (``pip install pydensecrf2`` in the
benchmark environment); without it those fields are null.

    python benchmarks/bench_crf.py [--height 375 --width 500 --labels 21 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from structvision.ops.crf import dense_crf


def make_inputs(
    *, height: int, width: int, labels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A natural-ish test image (smooth colour regions + noise) and noisy class probabilities.

    Returns ``image (H, W, 3) uint8`` and ``probs (C, H, W) float32``; the probabilities favour
    the label of a piecewise-constant region map that the image's colours follow.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse_labels = torch.randint(0, labels, (1, 1, 6, 8), generator=generator).float()
    region = F.interpolate(coarse_labels, size=(height, width), mode="nearest")[0, 0].long()
    palette = torch.rand(labels, 3, generator=generator) * 255.0  # (C, 3)
    colour = palette[region] + torch.randn(height, width, 3, generator=generator) * 10.0
    image = colour.clamp(0, 255).round().to(torch.uint8).numpy()
    logits = torch.randn(labels, height, width, generator=generator) * 1.5
    logits += 2.0 * F.one_hot(region, labels).permute(2, 0, 1).float()
    probs = logits.softmax(dim=0).numpy().astype(np.float32)
    return image, probs


def time_ours(image: np.ndarray, probs: np.ndarray, *, device: str, repeats: int) -> tuple:
    image_t = torch.from_numpy(image).to(device)
    probs_t = torch.from_numpy(probs).to(device)
    dense_crf(image_t, probs_t, iterations=1)  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        marginals = dense_crf(image_t, probs_t, iterations=10)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), marginals.cpu().numpy()


def compare_soft(image: np.ndarray, probs: np.ndarray) -> dict | None:
    """Agreement where Q does not saturate (weights 1 and 1, 5 iterations): max |dQ| means more."""
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        return None
    labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=3, compat=1)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(image), compat=1)
    ref_q = np.array(crf.inference(5)).reshape(labels, height, width)
    ours_q = dense_crf(
        torch.from_numpy(image),
        torch.from_numpy(probs),
        iterations=5,
        gaussian_weight=1.0,
        bilateral_weight=1.0,
    ).numpy()
    return {
        "soft_argmax_agreement": round(float((ours_q.argmax(0) == ref_q.argmax(0)).mean()), 5),
        "soft_max_abs_dq": float(np.abs(ours_q - ref_q).max()),
        "soft_mean_abs_dq": float(np.abs(ours_q - ref_q).mean()),
    }


def time_pydensecrf(image: np.ndarray, probs: np.ndarray, *, repeats: int) -> tuple:
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        return None, None
    labels, height, width = probs.shape
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        crf = dcrf.DenseCRF2D(width, height, labels)
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
        crf.addPairwiseGaussian(sxy=3, compat=3)
        crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(image), compat=10)
        marginals = np.array(crf.inference(10)).reshape(labels, height, width)
        times.append(time.perf_counter() - start)
    return min(times), marginals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--labels", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    image, probs = make_inputs(
        height=args.height, width=args.width, labels=args.labels, seed=args.seed
    )
    ours_s, ours_q = time_ours(image, probs, device="cpu", repeats=args.repeats)
    result = {
        "height": args.height,
        "width": args.width,
        "labels": args.labels,
        "iterations": 10,
        "torch_threads": torch.get_num_threads(),
        "ours_cpu_s": round(ours_s, 4),
        "ours_cuda_s": None,
        "pydensecrf_s": None,
        "speedup_vs_pydensecrf": None,
        "argmax_agreement": None,
        "max_abs_dq": None,
    }
    if torch.cuda.is_available():
        result["ours_cuda_s"] = round(time_ours(image, probs, device="cuda", repeats=3)[0], 4)
    ref_s, ref_q = time_pydensecrf(image, probs, repeats=args.repeats)
    if ref_s is not None:
        result["pydensecrf_s"] = round(ref_s, 4)
        result["speedup_vs_pydensecrf"] = round(ref_s / ours_s, 3)
        agreement = (ours_q.argmax(0) == ref_q.argmax(0)).mean()
        result["argmax_agreement"] = round(float(agreement), 5)
        result["max_abs_dq"] = float(np.abs(ours_q - ref_q).max())
        result["argmax_agreement_unary"] = round(
            float((probs.argmax(0) == ref_q.argmax(0)).mean()), 5
        )
        result.update(compare_soft(image, probs) or {})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""RAFT speed: structvision's RAFT against torchvision's at equal weights and equal outputs.

One process; torchvision's model (random weights, seed 0) is converted with
``from_torchvision``, both run the same frame pairs with the same number of updates, in
alternating rounds (so that a change of machine load hits both), and the final flows are
checked to agree within 1e-3 px. Prints pairs/s of each, their ratio and the largest
difference, as JSON.

    python benchmarks/bench_flow_speed.py                        # raft_small, 128x256, CPU
    python benchmarks/bench_flow_speed.py --model large --device cuda
    python benchmarks/bench_flow_speed.py --threads 1 --clock cpu   # beside other jobs
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision

from structvision.convert import from_torchvision


def _timed(function, rounds: int, clock=time.perf_counter) -> float:
    """Seconds per call (after one warm-up call)."""
    function()
    started = clock()
    for _ in range(rounds):
        function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (clock() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("small", "large"), default="small")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--updates", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--calls", type=int, default=4, help="calls per model per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: this process's CPU time (one thread, on a machine busy with other jobs)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    builder = getattr(torchvision.models.optical_flow, f"raft_{args.model}")
    theirs = builder().eval().to(args.device)
    ours = from_torchvision(theirs).eval()
    generator = torch.Generator().manual_seed(1)
    shape = (args.batch, 3, args.height, args.width)
    first = torch.rand(shape, generator=generator).to(args.device)
    second = torch.rand(shape, generator=generator).to(args.device)

    def run_ours():
        return ours(first, second)

    def run_theirs():
        return theirs(2 * first - 1, 2 * second - 1, num_flow_updates=args.updates)

    ours.num_updates = args.updates
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    with torch.inference_mode():
        mine = torch.stack([p["flow"] for p in run_ours()])
        difference = float((mine - run_theirs()[-1]).abs().max())
        times = {"structvision": [], "torchvision": []}
        for round_index in range(args.rounds):
            order = [("structvision", run_ours), ("torchvision", run_theirs)]
            for name, function in order if round_index % 2 == 0 else order[::-1]:
                times[name].append(_timed(function, args.calls, clock))
    pairs_per_s = {name: args.batch / min(values) for name, values in times.items()}
    print(
        json.dumps(
            {
                "model": f"raft_{args.model}",
                "size": [args.height, args.width],
                "batch": args.batch,
                "updates": args.updates,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "clock": args.clock,
                "pairs_per_s": {k: round(v, 2) for k, v in pairs_per_s.items()},
                "speedup": round(pairs_per_s["structvision"] / pairs_per_s["torchvision"], 3),
                "max_flow_difference_px": difference,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Trains the toy model with 2 CPU processes (DDP over gloo); run by test_distributed.py.

Usage: ``python ddp_fit_script.py OUT_DIR [RESUME]``. Fabric's launcher re-runs this script for
rank 1. Every rank writes ``OUT_DIR/rank{r}.safetensors`` (its final weights) and
``OUT_DIR/rank{r}.json`` (the metrics `fit` returned on that rank).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_toys import ToyDataset, ToyEvaluator, ToyNet, collate

from structvision.engine import TrainConfig, fit
from structvision.engine.checkpoint import save_state_dict
from structvision.engine.distributed import rank_and_world_size


def main() -> None:
    out_dir = Path(sys.argv[1])
    torch.set_num_threads(1)
    # Different initial weights on each process (the launcher sets LOCAL_RANK for rank 1 before
    # fit runs): DDP must broadcast rank 0's.
    torch.manual_seed(100 + int(os.environ.get("LOCAL_RANK", "0")))
    model = ToyNet(dropout=0.0)  # no dropout: comparable with one process
    config = TrainConfig(
        max_steps=12,
        batch_size=3,
        grad_accum_steps=2,
        lr=0.1,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        log_every=2,
        checkpoint_every=6,
        clip_grad_norm=5.0,
        progress=False,
    )
    metrics = fit(
        model=model,
        train_dataset=ToyDataset(size=20),
        config=config,
        out_dir=out_dir / "run",
        collate_fn=collate,
        model_config={"name": "toy"},
        val_dataset=ToyDataset(size=7, augment=False),  # 7 images: uneven shards
        evaluator_factory=ToyEvaluator,
    )
    rank, world_size = rank_and_world_size()
    save_state_dict(model.state_dict(), out_dir / f"rank{rank}.safetensors")
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"world_size": world_size, **metrics}))


if __name__ == "__main__":
    main()

"""Worker for test_distributed.py, launched with ``python -m torch.distributed.run``.

Trains a tiny MLP with the Trainer on 2 CPU ranks (gloo). Each rank gets its own ``out_dir``
(RUN/rank<r>) so the test can see which ranks wrote files, and the harness (not the Trainer)
dumps each rank's final parameters and first batch for the comparison.
"""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from flowmatch.data import ArrayDataset
from flowmatch.models import MLP
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.train import TrainConfig, Trainer


def main() -> None:
    torch.set_num_threads(1)
    base = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.tensor([3.0, 3.0]) + 0.25 * torch.randn(1024, 2, generator=g))
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = MLP(2, hidden=32, depth=2, time_dim=16)
    cfg = TrainConfig(
        steps=30, batch_size=32, lr=1e-2, log_every=10, checkpoint_every=15, ema_decay=0.9
    )
    with Trainer(model, FlowMatchingObjective(), data, cfg, out_dir=base / f"rank{rank}") as tr:
        assert tr.dist.world_size == 2 and tr.dist.rank == rank
        result = tr.fit()
        assert result.step == 30
        # A second fit has nothing to do; every rank must agree on that (no stray collective).
        assert tr.fit().step == 30 and tr.last_checkpoint.name == "step_0000030"
        state = {f"model.{k}": v.detach().clone() for k, v in tr.model.state_dict().items()}
        state.update({f"ema.{k}": v.clone() for k, v in tr.ema.state_dict().items()})
        state["batch0"] = tr.batches.batch_at(0).x1.clone()
        save_file(state, str(base / f"harness_rank{rank}.safetensors"))


if __name__ == "__main__":
    main()

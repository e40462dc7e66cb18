"""Worker for test_ddp_meanflow.py: MeanFlow on 2 CPU ranks (gloo) via ``torch.distributed.run``.

Each rank trains on its own data shard; if the JVP's prediction bypassed DDP, the gradients
would not be averaged and the ranks' weights would drift apart.
"""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from flowmatch.data import ArrayDataset
from flowmatch.fewstep import MeanFlowStep
from flowmatch.models import MLP
from flowmatch.train import TrainConfig, Trainer


def main() -> None:
    torch.set_num_threads(1)
    base = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.tensor([3.0, 3.0]) + 0.25 * torch.randn(512, 2, generator=g))
    torch.manual_seed(rank)
    model = MLP(2, hidden=16, depth=2, time_dim=8, time_inputs=2, time_scale=1.0)
    cfg = TrainConfig(steps=10, batch_size=32, lr=1e-2, log_every=5, ema_decay=None)
    with Trainer(model, MeanFlowStep(ratio=0.5), data, cfg) as tr:
        assert tr.dist.world_size == 2
        tr.fit()
        state = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
        save_file(state, str(base / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()

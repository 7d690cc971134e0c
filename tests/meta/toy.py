"""Toy tasks shared by the meta-learner tests: random binary 8x8 images (float64 unless asked)."""

import torch

from metagen.data.episodes import Tasks


def toy_tasks(T: int = 3, K: int = 4, Q: int = 2, dtype: torch.dtype = torch.float64) -> Tasks:
    g = torch.Generator().manual_seed(1)
    sup = torch.bernoulli(torch.full((T, K, 1, 8, 8), 0.3, dtype=dtype), generator=g)
    qry = torch.bernoulli(torch.full((T, Q, 1, 8, 8), 0.3, dtype=dtype), generator=g)
    return Tasks(sup, qry, torch.arange(T), torch.zeros(T, K), torch.zeros(T, Q))

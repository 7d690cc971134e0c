"""Toy tasks shared by the meta-learner tests: random binary 8x8 images (float64 unless asked), random texts."""

import torch

from metagen.data.episodes import Tasks


def toy_tasks(T: int = 3, K: int = 4, Q: int = 2, dtype: torch.dtype = torch.float64) -> Tasks:
    g = torch.Generator().manual_seed(1)
    sup = torch.bernoulli(torch.full((T, K, 1, 8, 8), 0.3, dtype=dtype), generator=g)
    qry = torch.bernoulli(torch.full((T, Q, 1, 8, 8), 0.3, dtype=dtype), generator=g)
    return Tasks(sup, qry, torch.arange(T), torch.zeros(T, K), torch.zeros(T, Q))


def toy_text_tasks(T: int = 2, K: int = 3, Q: int = 2, L: int = 12, vocab_size: int = 10) -> Tasks:
    """Random texts as token ids [T, K|Q, L]: boundary, 1..L-2 characters (ids 2..vocab_size-1), boundary, padding."""
    g = torch.Generator().manual_seed(1)

    def texts(n: int) -> torch.Tensor:
        x = torch.zeros(T * n, L, dtype=torch.long)
        for row in x:
            length = int(torch.randint(1, L - 1, (1,), generator=g))
            row[0], row[length + 1] = 1, 1
            row[1 : length + 1] = torch.randint(2, vocab_size, (length,), generator=g)
        return x.view(T, n, L)

    return Tasks(texts(K), texts(Q), torch.arange(T), torch.zeros(T, K), torch.zeros(T, Q))

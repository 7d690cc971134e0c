import pytest
import torch

from metagen.config import from_dict
from metagen.errors import ConfigError
from metagen.generators.base import Generator
from metagen.meta import build_learner
from metagen.nets import CrossAttention


def _attention():
    cfg = from_dict({"data": {"image_size": 8},
                     "generator": {"name": "vae", "latent_dim": 3, "channels": 4, "hidden": 16, "attn_dim": 8,
                                   "attn_heads": 2},
                     "learner": {"name": "attention", "memory_dim": 6, "channels": 4}})
    torch.manual_seed(0)
    return build_learner(cfg, (1, 8, 8)).double()


def _support(seed, k=4):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((k, 1, 8, 8), 0.3, dtype=torch.float64), generator=g)


def test_cross_attention_is_order_invariant_and_reads_the_memory():
    torch.manual_seed(0)
    attn = CrossAttention(5, 7, 8, heads=2).double()
    q, m = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 4, 7, dtype=torch.float64)
    out = attn(q, m)
    assert out.shape == (3, 8)
    assert torch.allclose(out, attn(q, m[:, torch.tensor([3, 1, 0, 2])]), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out, attn(q, m + 1))


def test_adapted_model_is_order_invariant_and_depends_on_the_support():
    learner = _attention()
    x = _support(9, k=2)
    support = _support(1)
    a = learner.adapt(support)
    b = learner.adapt(support[torch.tensor([2, 0, 3, 1])])
    c = learner.adapt(_support(2))
    torch.manual_seed(0)
    lp_a = a.log_prob(x, iw_samples=5)
    torch.manual_seed(0)
    lp_b = b.log_prob(x, iw_samples=5)
    torch.manual_seed(0)
    lp_c = c.log_prob(x, iw_samples=5)
    assert torch.allclose(lp_a, lp_b, rtol=1e-12) and not torch.allclose(lp_a, lp_c)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(a.sample(3, generator=g), b.sample(3, generator=torch.Generator().manual_seed(0)))


def test_a_generator_without_attention_refuses_a_memory():
    class Plain(Generator):
        pass

    with pytest.raises(ConfigError, match="cannot attend over a support set"):
        Plain((1, 8, 8), memory_dim=4)

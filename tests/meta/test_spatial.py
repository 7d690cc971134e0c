import pytest
import torch

from metagen.config import from_dict
from metagen.errors import ConfigError
from metagen.meta import build_learner


def _learner(generator: str = "vae"):
    gen = {"vae": {"name": "vae", "latent_dim": 4, "channels": 4, "hidden": 16},
           "pixelcnn": {"name": "pixelcnn", "channels": 4, "layers": 2, "kernel": 3}}[generator]
    cfg = from_dict({"generator": gen, "learner": {"name": "spatial", "map_dim": 5, "channels": 4}})
    torch.manual_seed(0)
    return build_learner(cfg, (1, 28, 28))


@pytest.mark.parametrize("generator", ["vae", "pixelcnn"])
def test_the_context_map_is_a_permutation_invariant_mean_over_the_support(generator):
    learner = _learner(generator)
    s = torch.bernoulli(torch.full((3, 6, 1, 28, 28), 0.2))
    maps = learner.context_map(s)
    assert maps.shape == (3, 5, 14, 14)
    assert torch.allclose(maps, learner.context_map(s[:, torch.randperm(6)]), atol=1e-6)
    one_each = torch.stack([learner.context_map(s[:, k : k + 1]) for k in range(6)]).mean(0)
    assert torch.allclose(maps, one_each, atol=1e-6)


@pytest.mark.parametrize("generator", ["vae", "pixelcnn"])
def test_adapted_likelihood_and_samples_depend_on_the_support(generator):
    learner = _learner(generator)
    a = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2))
    b = torch.zeros(4, 1, 28, 28)
    b[:, :, 10:18, 5:20] = 1
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.2))
    torch.manual_seed(0)
    lp_a = learner.adapt(a).log_prob(x, iw_samples=5)
    torch.manual_seed(0)
    lp_b = learner.adapt(b).log_prob(x, iw_samples=5)
    assert lp_a.shape == (3,) and not torch.allclose(lp_a, lp_b)
    sa = learner.adapt(a).sample(2, generator=torch.Generator().manual_seed(0))
    sb = learner.adapt(b).sample(2, generator=torch.Generator().manual_seed(0))
    assert sa.shape == (2, 1, 28, 28) and not torch.equal(sa, sb)


def test_families_that_cannot_read_a_map_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="cannot read a context map") as err:
        from_dict({"generator": {"name": "flow"}, "learner": {"name": "spatial"}})
    assert "\n" not in str(err.value)

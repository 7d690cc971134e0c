import itertools
import math

import torch

from metagen.config import from_dict
from metagen.data import EpisodeSampler
from metagen.data.concepts import ConceptSet
from metagen.meta import build_learner
from metagen.meta.baselines import copy_log_prob
from metagen.train import Trainer


def test_copy_log_prob_closed_form():
    s = torch.zeros(2, 1, 3, 3)
    s[1] = 1
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, :2] = 1  # differs from s[0] in 2 pixels, from s[1] in 7
    eps = 0.1
    logit = torch.tensor(math.log(eps / (1 - eps)))
    want = math.log(0.5 * (eps**2 * (1 - eps) ** 7 + eps**7 * (1 - eps) ** 2))
    assert math.isclose(copy_log_prob(x, s, logit, 3).item(), want, rel_tol=1e-6)
    assert math.isclose(copy_log_prob(x, s[:1], logit, 3).item(), 2 * math.log(eps) + 7 * math.log(1 - eps),
                        rel_tol=1e-6)


def test_copy_likelihood_normalises_over_all_2x2_images():
    support = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])  # [2, 1, 2, 2]
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, 1, 2, 2)
    lp = copy_log_prob(images, support, torch.tensor(-1.3), 3)
    assert math.isclose(lp.exp().sum().item(), 1.0, rel_tol=1e-6)


def _copy_learner():
    return build_learner(from_dict({"learner": {"name": "copy"}}), (1, 6, 6))


def test_copy_samples_are_support_examples():
    learner = _copy_learner()
    support = torch.bernoulli(torch.full((3, 1, 6, 6), 0.5))
    samples = learner.adapt(support).sample(20, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(x, s) for s in support) for x in samples)


def test_copy_fits_the_true_flip_rate():
    torch.manual_seed(0)
    protos = torch.bernoulli(torch.full((30, 1, 1, 6, 6), 0.5))
    flips = torch.bernoulli(torch.full((30, 20, 1, 6, 6), 0.1))
    examples = [(p - f).abs() for p, f in zip(protos, flips, strict=True)]  # each concept: a prototype with 10% flips
    concepts = ConceptSet(examples, [str(i) for i in range(30)], ["g"] * 30)
    cfg = from_dict({"learner": {"name": "copy"}, "train": {"steps": 300, "lr": 0.05, "shots": [1, 1],
                                                            "queries": 5}})
    learner = build_learner(cfg, (1, 6, 6))
    Trainer(cfg, learner, EpisodeSampler(concepts, 0), progress=False).fit()
    # one support example vs a query: each pixel differs with prob 2*0.1*0.9 = 0.18
    assert abs(learner.flip - 0.18) < 0.02


def test_unconditional_ignores_the_support():
    cfg = from_dict({"learner": {"name": "unconditional"},
                     "generator": {"name": "vae", "latent_dim": 4, "channels": 4, "hidden": 16}})
    learner = build_learner(cfg, (1, 28, 28))
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.2))
    torch.manual_seed(0)
    a = learner.adapt(torch.zeros(3, 1, 28, 28)).log_prob(x, iw_samples=3)
    torch.manual_seed(0)
    b = learner.adapt(torch.ones(5, 1, 28, 28)).log_prob(x, iw_samples=3)
    assert torch.equal(a, b)

"""Sample metrics: FID, precision/recall, novelty, diversity, the feature network and its cache, the fidelity
classifier's data, and the adaptation-cost probes."""

import math

import pytest
import torch

from metagen.config import load_config
from metagen.data import fixed_tasks, load_splits
from metagen.errors import DataError
from metagen.metrics.cost import peak_memory, timed
from metagen.metrics.features import FeatureConfig, FeatureNet, FidelityClassifier, feature_net, features_key
from metagen.metrics.quality import diversity, fid, fid_bootstrap, knn_radii, novelty, precision_recall


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g)
    assert fid(real, real) == pytest.approx(0, abs=1e-6)
    scores = [fid(real, real + s * torch.randn(400, 8, generator=g)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert scores == sorted(scores) and scores[0] < 0.1 < scores[-1]


def test_fid_matches_the_gaussian_closed_form():
    # N(0, I) vs N(mu, 4 I) in d dims: |mu|^2 + d (1 + 4 - 2 * 2) = |mu|^2 + d.
    g = torch.Generator().manual_seed(1)
    d, n = 4, 200_000
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(n, d, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0, 0, 1])
    assert fid(a, b) == pytest.approx(2 + d, rel=0.02)


def test_fid_on_images_through_the_feature_network():
    torch.manual_seed(0)
    net = FeatureNet(5, channels=8).eval()
    imgs = (torch.rand(200, 1, 16, 16) < 0.3).float()
    f = net.features(imgs)
    assert f.shape == (200, 8)
    assert fid(f, f) == pytest.approx(0, abs=1e-6)
    flipped = torch.where(torch.rand_like(imgs) < 0.3, 1 - imgs, imgs)
    assert fid(f, net.features(flipped)) > fid(f, net.features(imgs[torch.randperm(200)])) + 1e-6


def test_fid_of_diverged_samples_is_nan():
    real = torch.randn(50, 4)
    broken = real.clone()
    broken[3, 1] = math.nan
    assert math.isnan(fid(real, broken))
    value, half = fid_bootstrap(real.view(5, 10, 4), broken.view(5, 10, 4), reps=5)
    assert math.isnan(value) and math.isnan(half)


def test_fid_bootstrap_gives_an_interval_around_the_value():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(20, 10, 4, generator=g), torch.randn(20, 10, 4, generator=g) + 0.5
    value, half = fid_bootstrap(real, fake, reps=50, seed=0)
    assert value == pytest.approx(fid(real.flatten(0, 1), fake.flatten(0, 1)))
    assert half > 0 and fid_bootstrap(real, fake, reps=50, seed=0) == (value, half)  # seeded


def test_precision_recall_identical_sets_and_disjoint_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g)
    p, r = precision_recall(x, x.clone())
    assert p.mean() == 1 and r.mean() == 1
    p, r = precision_recall(x, x + 100)
    assert p.mean() == 0 and r.mean() == 0


def test_precision_recall_of_a_collapsed_generator():
    # All samples on one real point: precise (every sample is on the real manifold) but no recall.
    x = torch.arange(20.0).unsqueeze(1)  # points 0..19 on a line: 3-NN radius is 2 (3 at the ends)
    assert knn_radii(x, 3).tolist() == [3.0, 2.0, *[2.0] * 16, 2.0, 3.0]
    fake = torch.full((10, 1), 5.0)
    p, r = precision_recall(x, fake)
    assert p.mean() == 1
    # Fake points all coincide, so their radius is 0: only the real point at 5 is covered.
    assert r.sum() == 1 and r[5] == 1


def test_novelty_and_diversity():
    support = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    assert novelty(support.clone(), support) == 0  # copying the support
    assert novelty(torch.tensor([[3.0, 4.0], [10.0, 1.0]]), support) == pytest.approx((5 + 1) / 2)
    assert diversity(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5)
    assert diversity(torch.ones(5, 3)) == 0
    with pytest.raises(ValueError, match="at least 2"):
        diversity(torch.ones(1, 3))


def test_peak_memory_sees_cpu_allocations():
    def work():
        a = torch.zeros(1 << 20)  # 4 MiB
        b = torch.zeros(1 << 21)  # 8 MiB, both alive: 12 MiB
        del a
        c = torch.zeros(1 << 20)  # the freed 4 MiB again: still 12 MiB at most
        return b.sum() + c.sum()

    out, peak = peak_memory(work)
    assert out.item() == 0 and peak == pytest.approx(12 * 2**20, rel=0.01)
    value, seconds = timed(lambda: 3)
    assert value == 3 and seconds >= 0


@pytest.fixture(scope="module")
def glyph_setup():
    config = load_config("glyphs")
    splits = load_splits(config.data, config.split)
    config.split.test_groups = splits.test_groups
    return config, splits


def test_feature_net_is_cached_by_what_it_was_trained_on(glyph_setup):
    config, splits = glyph_setup
    cfg = FeatureConfig(channels=8, steps=3, batch=16)
    first = feature_net(config, splits.background, cfg, progress=False)
    assert first.path.is_file() and first.info["classes"] == len(splits.background)
    again = feature_net(config, splits.background, cfg, progress=False)
    assert again.path == first.path
    for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = FeatureConfig(channels=8, steps=4, batch=16)
    assert features_key(config, other) != features_key(config, cfg)
    moved = config.model_copy(deep=True)
    moved.data.data_dir = "/somewhere/else"  # where the data lives does not change the network
    assert features_key(moved, cfg) == features_key(config, cfg)


def test_fidelity_classifier_never_trains_on_support_examples(glyph_setup):
    _, splits = glyph_setup
    tasks = fixed_tasks(splits.held_out, 5, 4, seed=0, max_tasks=6)
    torch.manual_seed(0)
    clf = FidelityClassifier(FeatureNet(3, channels=8), tasks, steps=2, progress=False)
    support = {(int(c), int(i)) for c, ids in zip(tasks.concepts, tasks.support_ids, strict=True) for i in ids}
    query = {(int(c), int(i)) for c, ids in zip(tasks.concepts, tasks.query_ids, strict=True) for i in ids}
    assert clf.trained_on == query and not clf.trained_on & support
    assert len(clf.trained_on) == 6 * 4 and 0 <= clf.support_accuracy <= 1
    overlapping = tasks.subset(slice(0, 6))
    overlapping.query_ids = overlapping.support_ids[:, :4].clone()
    with pytest.raises(DataError, match="support"):
        FidelityClassifier(FeatureNet(3, channels=8), overlapping, steps=1, progress=False)


def test_fidelity_classifier_depends_on_its_seed_not_on_the_global_random_state(glyph_setup):
    _, splits = glyph_setup
    tasks = fixed_tasks(splits.held_out, 3, 4, seed=0, max_tasks=5)
    torch.manual_seed(0)
    features = FeatureNet(3, channels=8)
    nets = []
    for global_seed, seed in ((1, 0), (2, 0), (1, 5)):
        torch.manual_seed(global_seed)
        nets.append(FidelityClassifier(features, tasks, steps=3, seed=seed, progress=False).net.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(nets[0].values(), nets[1].values(), strict=True))
    assert not torch.equal(nets[0]["head.weight"], nets[2]["head.weight"])


def test_fidelity_classifier_recognises_held_out_concepts(glyph_setup):
    config, splits = glyph_setup
    tasks = fixed_tasks(splits.held_out, 5, 10, seed=0, max_tasks=5)
    feats = feature_net(config, splits.background, FeatureConfig(channels=16, steps=150, batch=64), progress=False)
    clf = FidelityClassifier(feats.net, tasks, steps=200, progress=False)
    assert clf.support_accuracy > 0.8  # 5 glyphs, judged on support renders it never saw
    # Soft renderings of the same shapes (what a VAE returns) are recognised too: blur and lower contrast.
    box = torch.full((1, 1, 3, 3), 1 / 9)
    soft = [clf.recognised(0.7 * torch.nn.functional.conv2d(tasks.support[t], box, padding=1), t) for t in range(5)]
    assert sum(soft) / 5 > 0.5  # chance: 0.2; without the blur augmentation such images fall to chance
    assert not math.isnan(clf.train_accuracy)

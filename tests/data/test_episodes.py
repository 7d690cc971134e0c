import pytest
import torch

from metagen.data.concepts import ConceptSet
from metagen.data.episodes import EpisodeSampler, fixed_tasks
from metagen.errors import DataError


def _concepts(n=10, examples=20):
    # example j of concept i is filled with the value i*100+j, so ids can be checked from pixels
    ex = [torch.stack([torch.full((1, 2, 2), i * 100 + j, dtype=torch.int32) for j in range(examples)])
          for i in range(n)]
    return ConceptSet(ex, [str(i) for i in range(n)], ["g"] * n)


def test_episode_shapes_and_ids():
    s = EpisodeSampler(_concepts(), seed=0)
    t = s.sample(tasks=4, shots=5, queries=3)
    assert t.support.shape == (4, 5, 1, 2, 2) and t.query.shape == (4, 3, 1, 2, 2)
    assert t.support.dtype == torch.float32
    assert len(set(t.concepts.tolist())) == 4  # distinct concepts when there are enough
    for i in range(4):
        c = t.concepts[i].item()
        assert (t.support[i, :, 0, 0, 0] == c * 100 + t.support_ids[i]).all()
        assert (t.query[i, :, 0, 0, 0] == c * 100 + t.query_ids[i]).all()
        assert set(t.support_ids[i].tolist()).isdisjoint(t.query_ids[i].tolist())


def test_shot_range_draws_one_k_per_batch():
    s = EpisodeSampler(_concepts(), seed=0)
    ks = {s.sample(2, (1, 4), 2).shots for _ in range(50)}
    assert ks == {1, 2, 3, 4}


def test_sampler_state_round_trip_reproduces_episodes():
    a = EpisodeSampler(_concepts(), seed=5)
    a.sample(3, 2, 2)
    state = a.state_dict()
    x = a.sample(3, (1, 5), 2)
    b = EpisodeSampler(_concepts(), seed=99)
    b.load_state_dict(state)
    y = b.sample(3, (1, 5), 2)
    assert torch.equal(x.support, y.support) and torch.equal(x.query, y.query)


def test_fixed_tasks_are_nested_and_deterministic():
    t = fixed_tasks(_concepts(), max_shots=10, queries=5, seed=1)
    assert len(t) == 10 and t.support.shape[1] == 10 and t.query.shape[1] == 5
    one, five = t.with_shots(1), t.with_shots(5)
    assert torch.equal(five.support[:, :1], one.support) and torch.equal(one.query, five.query)
    assert torch.equal(t.support, fixed_tasks(_concepts(), 10, 5, seed=1).support)
    assert len(fixed_tasks(_concepts(), 10, 5, seed=1, max_tasks=4)) == 4


def test_fixed_tasks_draw_several_episodes_per_concept():
    t = fixed_tasks(_concepts(n=4), max_shots=3, queries=2, seed=0, episodes=5)
    assert t.concepts.tolist() == [c for c in range(4) for _ in range(5)]
    for i in range(len(t)):
        assert set(t.support_ids[i].tolist()).isdisjoint(t.query_ids[i].tolist())
        assert (t.query[i, :, 0, 0, 0] == t.concepts[i] * 100 + t.query_ids[i]).all()
    assert len({tuple(q) for q in t.query_ids[:5].tolist()}) > 1  # a concept's episodes are different draws


def test_too_many_shots_is_a_clear_error():
    with pytest.raises(DataError, match="needs 21 examples per concept but some concepts have only 20"):
        EpisodeSampler(_concepts(), 0).sample(2, 16, 5)
    with pytest.raises(DataError, match="no concepts"):
        EpisodeSampler(ConceptSet([], [], []), 0).sample(2, 1, 1)

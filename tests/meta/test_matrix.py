"""Every generator family x every meta-learner: it trains, adapts and samples, or the config is refused in one line.

The refused pairs are exactly those of docs/ARCHITECTURE.md's matrix.
"""

from __future__ import annotations

import pytest
import torch
from test_contract import LEARNER_CFG
from toy import toy_tasks, toy_text_tasks

from metagen.config import from_dict
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError
from metagen.meta import build_learner
from metagen.registry import GENERATORS, LEARNERS

GEN_CFG = {
    "vae": {"latent_dim": 4, "channels": 4, "hidden": 16},
    "flow": {"hidden": 8, "checkerboard": 1, "levels": 1, "depth": 1},
    "pixelcnn": {"channels": 8, "layers": 2, "kernel": 3, "attn_dim": 8, "attn_every": 1},
    "diffusion": {"channels": 8, "timesteps": 10, "sample_steps": 2, "eval_steps": 3},
    "gan": {"latent_dim": 4, "channels": 4},
    "lstm": {"vocab_size": 10, "embed_dim": 8, "hidden": 16},
    "transformer": {"vocab_size": 10, "dim": 16, "heads": 2, "layers": 1},
    "fontgen": {"channels": 4, "blocks": 1, "style_hidden": 8},
}
PAIRS = {"fontgen"}  # glyph pairs [2, H, W] of the fonts data: sampled given reference glyphs
TEXT = {"lstm", "transformer"}
REFUSED = {
    ("flow", "attention"), ("diffusion", "attention"), ("gan", "attention"),  # no attention over a memory
    ("gan", "maml"), ("gan", "metasgd"),  # second order through a two-player game
    ("lstm", "attention"), ("transformer", "attention"),
    ("lstm", "copy"), ("transformer", "copy"),  # copy's likelihood is for binary images
    ("flow", "spatial"), ("diffusion", "spatial"), ("gan", "spatial"),  # cannot read a context map
    ("lstm", "spatial"), ("transformer", "spatial"),
    ("fontgen", "spatial"), ("fontgen", "copy"),
}
REFUSED |= {(f, "refine") for f in GEN_CFG if f != "fontgen"}  # it retrieves glyphs of training typefaces
SHAPE = (1, 8, 8)  # toy_tasks' images


def test_the_table_covers_every_registered_family():
    assert set(GEN_CFG) == set(GENERATORS.names())


LEARNERS_CFG = {**LEARNER_CFG, "refine": {"context_dim": 4, "hidden": 16, "channels": 4, "neighbours": 2}}


def _config(family: str, learner: str):
    source = "fortunes" if family in TEXT else "fonts" if family in PAIRS else "glyphs"
    return from_dict({"data": {"source": source},
                      "generator": {"name": family, **GEN_CFG[family]},
                      "learner": {"name": learner, **LEARNERS_CFG[learner]}})


@pytest.mark.parametrize("family", sorted(GEN_CFG))
# the programs learner has no base generator to pair (its strokes are its family): tests/test_programs_learner.py
@pytest.mark.parametrize("learner", sorted(set(LEARNERS_CFG) - {"programs"}))
def test_pair_works_or_is_refused_in_one_line(family, learner):
    if (family, learner) in REFUSED:
        with pytest.raises(ConfigError) as err:
            _config(family, learner)
        assert "\n" not in str(err.value) and family in str(err.value)
        return
    torch.manual_seed(0)
    shape = (12,) if family in TEXT else (2, 8, 8) if family in PAIRS else SHAPE
    model = build_learner(_config(family, learner), shape)
    tasks = toy_text_tasks() if family in TEXT else toy_tasks(T=2, K=3, Q=2, dtype=torch.float32)
    options = {}
    if family in PAIRS:  # a second channel: the reference glyphs
        tasks = Tasks(*(torch.cat([x, x.flip(-1)], 2) for x in (tasks.support, tasks.query)), tasks.concepts,
                      tasks.support_ids, tasks.query_ids)
        options = {"content": tasks.query[0, :2, 1:]}
        if learner == "refine":  # its bank of training typefaces: here each toy task is a face
            from types import SimpleNamespace

            from metagen.data.concepts import ConceptSet

            faces = ConceptSet([torch.cat([s, q]) for s, q in zip(tasks.support, tasks.query, strict=True)],
                               ["a", "b"], ["a", "b"])
            model.fit_data(None, SimpleNamespace(fonts=True, background=faces), None)
    if model.meta_trained:
        loss = model.meta_loss(tasks)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
    with torch.no_grad():
        adapted = model.adapt(tasks.support[0])
        x = adapted.sample(2, generator=torch.Generator().manual_seed(0), **options)
        assert x.shape == (2, *shape) and x.min() >= 0 and x.max() <= (9 if family in TEXT else 1)
        if adapted.has_log_prob:
            assert torch.isfinite(adapted.log_prob(tasks.query[0], iw_samples=2)).all()
        else:
            assert family == "gan"


def test_learners_and_families_named_in_the_refusals_exist():
    for family, learner in REFUSED:
        assert family in GENERATORS and learner in LEARNERS

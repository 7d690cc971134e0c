import pytest
import torch
from safetensors.torch import save_file

from metagen.checkpoint import load_checkpoint, load_learner, save_checkpoint
from metagen.errors import CheckpointError
from metagen.meta import build_learner


def test_round_trip_keeps_weights_config_and_step(tmp_path, tiny):
    cfg = tiny()
    learner = build_learner(cfg, (1, 28, 28))
    opt = torch.optim.Adam(learner.parameters())
    for p in learner.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    path = tmp_path / "run" / "checkpoint.safetensors"
    save_checkpoint(path, cfg, 17, learner, opt, {"x": 1})
    ckpt = load_checkpoint(path.parent)  # a run folder works too
    assert ckpt.step == 17 and ckpt.config == cfg and ckpt.sampler == {"x": 1}
    assert ckpt.example_shape == (1, 28, 28)
    loaded, _ = load_learner(path)
    for (k, a), (_, b) in zip(learner.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    opt2 = torch.optim.Adam(loaded.parameters())
    opt2.load_state_dict(ckpt.optimizer)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert [p.name for p in tmp_path.joinpath("run").iterdir()] == ["checkpoint.safetensors"]  # no temp files


def test_bad_checkpoints_are_clear_errors(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path)
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "torn.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a metagen checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_checkpoint_from_another_model_is_refused(tmp_path, tiny):
    small = build_learner(tiny(), (1, 28, 28))
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, tiny(), 1, small)
    ckpt = load_checkpoint(path)
    bigger = build_learner(tiny(generator={"hidden": 32}), (1, 28, 28))
    from metagen.checkpoint import load_model_state

    with pytest.raises(CheckpointError, match="different model"):
        load_model_state(bigger, ckpt)

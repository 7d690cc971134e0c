import pytest
import torch
from toy import toy_tasks

from metagen.config import from_dict
from metagen.errors import ConfigError
from metagen.meta import build_learner
from metagen.meta.functional import call

T, K, Q, STEPS, LR = 3, 4, 2, 2, 0.05


def _maml(name="maml", **learner):
    cfg = from_dict({"data": {"image_size": 8},
                     "generator": {"name": "vae", "latent_dim": 3, "channels": 4, "hidden": 16},
                     "learner": {"name": name, "inner_steps": STEPS, "inner_lr": LR, **learner}})
    torch.manual_seed(0)
    return build_learner(cfg, (1, 8, 8)).double()


def _tasks():
    return toy_tasks(T, K, Q)


def _inner_lr(learner, name):
    """Meta-SGD's learned rate for parameter `name` (a tensor of its shape), or MAML's scalar."""
    return learner.inner_lrs[name.replace(".", "__")] if hasattr(learner, "inner_lrs") else LR


def _reference(learner, tasks, first_order, reseed_each_task):
    """The textbook loop: per task, inner SGD with torch.autograd.grad(create_graph=True), then the query loss."""
    params = dict(learner.generator.named_parameters())
    total = 0.0
    for t in range(len(tasks)):
        if reseed_each_task:
            torch.manual_seed(123)  # what vmap(randomness="same") gives every task
        p = dict(params)
        for _ in range(STEPS):
            loss = call(learner.generator, p, "loss", tasks.support[t])
            grads = torch.autograd.grad(loss, list(p.values()), create_graph=not first_order)
            p = {k: v - _inner_lr(learner, k) * g for (k, v), g in zip(p.items(), grads, strict=True)}
        total = total + call(learner.generator, p, "loss", tasks.query[t])
    return total / len(tasks)


@pytest.mark.parametrize("name", ["maml", "metasgd"])
@pytest.mark.parametrize("first_order", [False, True])
def test_vmapped_meta_gradient_equals_reference_loop(name, first_order):
    learner = _maml(name, first_order=first_order, vectorize="vmap")
    if name == "metasgd":  # distinct per-entry rates, so a mix-up of parameters or entries shows
        with torch.no_grad():
            for lr in learner.inner_lrs.values():
                lr.uniform_(0.5 * LR, 1.5 * LR)
    learner.randomness = "same"
    tasks = _tasks()
    torch.manual_seed(123)
    loss = learner.meta_loss(tasks)
    ours = torch.autograd.grad(loss, list(learner.parameters()))
    ref_loss = _reference(learner, tasks, first_order, reseed_each_task=True)
    ref = torch.autograd.grad(ref_loss, list(learner.parameters()))
    assert torch.allclose(loss, ref_loss)
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


def test_second_and_first_order_gradients_differ():
    tasks = _tasks()
    grads = []
    for fo in (False, True):
        learner = _maml(first_order=fo, vectorize="vmap")
        learner.randomness = "same"
        torch.manual_seed(123)
        grads.append(torch.autograd.grad(learner.meta_loss(tasks), list(learner.parameters())))
    assert any(not torch.allclose(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("name", ["maml", "metasgd"])
def test_loop_path_equals_reference_loop(name):
    learner = _maml(name, vectorize="loop")
    tasks = _tasks()
    torch.manual_seed(7)
    ours = torch.autograd.grad(learner.meta_loss(tasks), list(learner.parameters()))
    torch.manual_seed(7)
    ref = torch.autograd.grad(_reference(learner, tasks, False, reseed_each_task=False), list(learner.parameters()))
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


def test_adapt_lowers_the_support_loss_and_leaves_the_init_alone():
    learner = _maml(eval_inner_steps=20)
    support = _tasks().support[0]
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    with torch.no_grad():  # adapt must work for evaluation code that runs under no_grad
        adapted = learner.adapt(support)
    torch.manual_seed(0)
    init_loss = learner.generator.loss(support)
    torch.manual_seed(0)
    adapted_loss = call(learner.generator, adapted.params, "loss", support)
    assert adapted_loss < init_loss - 1.0
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())


def test_adapt_params_pattern_selects_what_adapts():
    learner = _maml(adapt_params=r"^decoder\.", eval_inner_steps=2)
    adapted = learner.adapt(_tasks().support[0])
    assert adapted.params and all(k.startswith("decoder.") for k in adapted.params)
    with pytest.raises(ConfigError, match="matches no generator parameter"):
        _maml(adapt_params="^nothing$")
    with pytest.raises(ConfigError, match="not a regular expression"):
        _maml(adapt_params="(")


def test_auto_runs_the_loop_on_cpu_and_bools_still_work():
    assert _maml().cfg.vectorize == "auto"
    assert _maml(vectorize=True).cfg.vectorize == "vmap" and _maml(vectorize=False).cfg.vectorize == "loop"
    learner, tasks = _maml(), _tasks()
    torch.manual_seed(7)
    auto = learner.meta_loss(tasks)
    learner.cfg.vectorize = "loop"
    torch.manual_seed(7)
    assert torch.equal(auto, learner.meta_loss(tasks))
    with pytest.raises(ConfigError, match="vectorize"):
        _maml(vectorize="sometimes")

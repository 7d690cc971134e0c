import pytest
import torch
from toy import toy_tasks

from metagen.config import from_dict
from metagen.meta import build_learner
from metagen.meta.functional import call

T, K, Q, STEPS, LR, EPS = 3, 4, 2, 3, 0.02, 0.5


def _reptile(**learner):
    cfg = from_dict({"data": {"image_size": 8},
                     "generator": {"name": "vae", "latent_dim": 3, "channels": 4, "hidden": 16},
                     "learner": {"name": "reptile", "inner_steps": STEPS, "inner_lr": LR, **learner}})
    torch.manual_seed(0)
    return build_learner(cfg, (1, 8, 8)).double()


def _tasks():
    return toy_tasks(T, K, Q)


def _hand_reptile(learner, tasks, reseed_each_task):
    """theta + EPS * mean_t (phi_t - theta), phi_t from a per-task loop of SGD steps on support and query."""
    theta = {k: v.detach().clone() for k, v in learner.generator.named_parameters()}
    phis = []
    torch.manual_seed(123)
    for t in range(len(tasks)):
        if reseed_each_task:
            torch.manual_seed(123)
        x = torch.cat([tasks.support[t], tasks.query[t]])
        p = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(STEPS):
            grads = torch.autograd.grad(call(learner.generator, p, "loss", x), list(p.values()))
            p = {k: (v - LR * g).detach().requires_grad_() for (k, v), g in zip(p.items(), grads, strict=True)}
        call(learner.generator, p, "loss", tasks.query[t])  # the logged query loss draws noise too
        phis.append(p)
    return {k: theta[k] + EPS * torch.stack([phi[k].detach() - theta[k] for phi in phis]).mean(0) for k in theta}


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
def test_outer_sgd_step_is_the_reptile_interpolation(vectorize):
    learner = _reptile(vectorize=vectorize)
    learner.randomness = "same"
    tasks = _tasks()
    expected = _hand_reptile(learner, tasks, reseed_each_task=vectorize == "vmap")
    torch.manual_seed(123)
    loss = learner.meta_loss(tasks)
    opt = torch.optim.SGD(learner.parameters(), lr=EPS)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, v in learner.generator.named_parameters():
        assert torch.allclose(v, expected[k], rtol=1e-9, atol=1e-12), k
    theta0 = dict(_reptile().generator.named_parameters())
    assert max((expected[k] - theta0[k]).abs().max().item() for k in expected) > 1e-4  # the step did move


def test_loss_value_is_the_query_loss_at_the_adapted_weights():
    learner = _reptile()
    learner.randomness = "same"
    tasks = _tasks()
    torch.manual_seed(5)
    loss = learner.meta_loss(tasks)
    learner.eval()  # validation: the inner loop sees the support only
    torch.manual_seed(5)
    val = learner.meta_loss(tasks)
    assert torch.isfinite(loss) and torch.isfinite(val) and not torch.allclose(loss, val)
    with torch.no_grad():
        assert torch.isfinite(learner.meta_loss(tasks))


def test_shared_parameters_get_the_query_loss_gradient():
    learner = _reptile(adapt_params=r"^decoder\.")
    loss = learner.meta_loss(_tasks())
    loss.backward()
    encoder = [p.grad for n, p in learner.generator.named_parameters() if n.startswith("features.")]
    assert encoder and all(g is not None for g in encoder) and any(g.abs().sum() > 0 for g in encoder)


def test_adapt_uses_eval_inner_steps_and_leaves_the_init_alone():
    learner = _reptile(eval_inner_steps=10)
    support = _tasks().support[0]
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    adapted = learner.adapt(support)
    torch.manual_seed(0)
    init_loss = learner.generator.loss(support)
    torch.manual_seed(0)
    assert call(learner.generator, adapted.params, "loss", support) < init_loss
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())

"""Seconds per second-order MAML meta-iteration (forward + backward of the outer loss) and peak memory.

Two workloads, meta-batch 16, one and five inner SGD steps:
  vae    metagen's Omniglot VAE (latent 32, 32 channels, hidden 256), 5 shots and 10 queries per task;
  conv4  the classic 4-block conv net (64 channels, batch norm, 28x28), 5-way 5-shot, 5 queries per class.
Variants:
  metagen-vmap   metagen.meta.maml.MAML, tasks under torch.func.vmap (learner.vectorize = "vmap")
  metagen-loop   the same learner, one task at a time (learner.vectorize = "loop"; what "auto" picks on CPU)
  grouped        one grouped convolution over the stacked tasks (groups = T); conv4 only, written out here
  grouped-cl     the same in channels-last memory format
  autograd-loop  the textbook per-task loop with torch.autograd.grad(create_graph=True)
  higher         the `higher` library (innerloop_ctx), one task at a time
Each (workload, inner steps, variant) runs in its own process, so that peak memory is its own: CPU peak
resident memory growth over the process's state before the first iteration, or CUDA max allocated memory.
Gradients of every variant are compared with autograd-loop's on the same tasks with the model's noise off.

  python benchmarks/meta_speed.py [--device cpu] [--iters 10] [--out benchmarks/results/meta_speed.json]
writes JSON and the markdown table docs/benchmarks.md (with --doc).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

T, INNER_LR = 16, 1e-3
VARIANTS = {"vae": ["metagen-vmap", "metagen-loop", "autograd-loop", "higher"],
            "conv4": ["metagen-vmap", "metagen-loop", "grouped", "grouped-cl", "autograd-loop", "higher"]}


# -- workloads --------------------------------------------------------------------------------------------
class Conv4(nn.Module):
    """The MAML Omniglot classifier: 4 x (conv3x3 64, batch norm, ReLU, max-pool 2), linear head."""

    def __init__(self, ways: int = 5, channels: int = 64) -> None:
        super().__init__()
        layers, c = [], 1
        for _ in range(4):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels, track_running_stats=False),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c = channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, ways)  # 28 -> 14 -> 7 -> 3 -> 1

    def forward(self, method: str, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        assert method == "loss"
        return self.loss(batch)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.head(self.body(x).flatten(1)), y)


@dataclass
class Batch:
    support: tuple[torch.Tensor, ...] | torch.Tensor
    query: tuple[torch.Tensor, ...] | torch.Tensor

    def __len__(self) -> int:
        return T


def workload(name: str, steps: int, device: torch.device):
    """(MAML learner, tasks) with fixed seeds."""
    from metagen.config import from_dict
    from metagen.meta import build_learner

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    gen = {"name": "vae", "latent_dim": 32, "channels": 32, "hidden": 256}
    learner = build_learner(from_dict({"generator": gen, "learner": {
        "name": "maml", "inner_steps": steps, "inner_lr": INNER_LR}}), (1, 28, 28))
    if name == "vae":
        tasks = Batch(torch.bernoulli(torch.full((T, 5, 1, 28, 28), 0.2), generator=g),
                      torch.bernoulli(torch.full((T, 10, 1, 28, 28), 0.2), generator=g))
    else:
        learner.generator = Conv4()
        labels = torch.arange(5).repeat_interleave(5).expand(T, -1).contiguous()  # [T, 25]
        tasks = Batch((torch.rand(T, 25, 1, 28, 28, generator=g), labels),
                      (torch.rand(T, 25, 1, 28, 28, generator=g), labels.clone()))
    learner.to(device)
    to = (lambda v: tuple(a.to(device) for a in v)) if isinstance(tasks.support, tuple) else (lambda v: v.to(device))
    return learner, Batch(to(tasks.support), to(tasks.query))


def _index(batch, t):
    return tuple(b[t] for b in batch) if isinstance(batch, tuple) else batch[t]


# -- variants: each returns the outer loss, with .backward() left to the caller ----------------------------
def autograd_loop(learner, tasks, steps: int) -> torch.Tensor:
    model = learner.generator
    names, params = zip(*model.named_parameters(), strict=True)
    total = 0.0
    for t in range(T):
        fast = list(params)
        for _ in range(steps):
            loss = functional_call(model, dict(zip(names, fast, strict=True)), ("loss", _index(tasks.support, t)))
            grads = torch.autograd.grad(loss, fast, create_graph=True)
            fast = [p - INNER_LR * g for p, g in zip(fast, grads, strict=True)]
        total = total + functional_call(model, dict(zip(names, fast, strict=True)), ("loss", _index(tasks.query, t)))
    return total / T


def higher_loop(learner, tasks, steps: int) -> torch.Tensor:
    import higher

    model = learner.generator
    opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    total = 0.0
    for t in range(T):
        with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(fmodel("loss", _index(tasks.support, t)))
            total = total + fmodel("loss", _index(tasks.query, t))
    return total / T


def grouped_conv4(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  channels_last: bool = False) -> torch.Tensor:
    """Conv4's summed task losses with per-task weights params[name]: [T, *shape]; x [T, N, 1, 28, 28]."""
    Tn, N = x.shape[:2]
    h = x.transpose(0, 1).reshape(N, Tn * x.shape[2], *x.shape[3:])  # tasks side by side as channel groups
    for i in range(4):
        if channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        w, b = params[f"body.{4 * i}.weight"], params[f"body.{4 * i}.bias"]  # [T, out, in, 3, 3], [T, out]
        h = F.conv2d(h, w.flatten(0, 1), b.flatten(), padding=1, groups=Tn)
        gamma, beta = params[f"body.{4 * i + 1}.weight"], params[f"body.{4 * i + 1}.bias"]
        h = F.batch_norm(h, None, None, gamma.flatten(), beta.flatten(), training=True)
        h = F.max_pool2d(F.relu(h), 2)
    h = h.view(N, Tn, -1).transpose(0, 1)  # [T, N, 64]
    logits = torch.baddbmm(params["head.bias"].unsqueeze(1), h, params["head.weight"].transpose(1, 2))
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(Tn, N).mean(1).sum()


def grouped(learner, tasks, steps: int, channels_last: bool = False) -> torch.Tensor:
    theta = dict(learner.generator.named_parameters())
    fast = {k: v.expand(T, *v.shape) for k, v in theta.items()}  # every task starts at theta
    for _ in range(steps):
        loss = grouped_conv4(fast, *tasks.support, channels_last)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
        fast = {k: v - INNER_LR * g for (k, v), g in zip(fast.items(), grads, strict=True)}
    return grouped_conv4(fast, *tasks.query, channels_last) / T


def metagen(learner, tasks, steps: int, vectorize: str) -> torch.Tensor:
    learner.cfg.vectorize = vectorize
    return learner.meta_loss(tasks)


def outer_loss(variant: str, learner, tasks, steps: int) -> torch.Tensor:
    if variant == "metagen-vmap":
        return metagen(learner, tasks, steps, "vmap")
    if variant == "metagen-loop":
        return metagen(learner, tasks, steps, "loop")
    if variant in ("grouped", "grouped-cl"):
        return grouped(learner, tasks, steps, channels_last=variant == "grouped-cl")
    if variant == "autograd-loop":
        return autograd_loop(learner, tasks, steps)
    return higher_loop(learner, tasks, steps)


# -- one measurement, in its own process -----------------------------------------------------------------
def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_once(variant: str, learner, tasks, steps: int, device: torch.device) -> float:
    """Seconds for one forward + backward of `variant`'s outer loss."""
    for p in learner.generator.parameters():
        p.grad = None
    _sync(device)
    t0 = time.perf_counter()
    outer_loss(variant, learner, tasks, steps).backward()
    _sync(device)
    return time.perf_counter() - t0


def measure(name: str, steps: int, variant: str, device: torch.device, iters: int, warmup: int,
            grad_file: Path) -> dict:
    learner, tasks = workload(name, steps, device)
    params = list(learner.generator.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_mib()
    # gradients with the VAE's noise off, for the cross-variant check
    randn_like = torch.randn_like
    torch.randn_like = torch.zeros_like
    grads = torch.autograd.grad(outer_loss(variant, learner, tasks, steps), params)
    torch.randn_like = randn_like
    torch.save(torch.cat([g.flatten() for g in grads]).cpu(), grad_file)
    del grads
    times = [time_once(variant, learner, tasks, steps, device) for _ in range(warmup + iters)][warmup:]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mib() - base_rss)
    return {"model": name, "inner_steps": steps, "variant": variant, "median_s": statistics.median(times),
            "min_s": min(times), "iters": iters, "peak_mib": peak}


def interleaved(name: str, steps: int, variants: list[str], device: torch.device, iters: int,
                warmup: int) -> list[dict]:
    """All variants in one process, one iteration each per round, the order rotating every round, so slow
    drifts of a shared machine hit every variant alike (no peak memory: that needs a process each)."""
    learner, tasks = workload(name, steps, device)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(warmup + iters):
        for v in variants[i % len(variants):] + variants[:i % len(variants)]:
            dt = time_once(v, learner, tasks, steps, device)
            if i >= warmup:
                times[v].append(dt)
    return [{"model": name, "inner_steps": steps, "variant": v, "median_s": statistics.median(t), "min_s": min(t),
             "iters": iters, "interleaved": True} for v, t in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(VARIANTS))
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--variants", nargs="+", default=None, help="default: every variant of each model")
    ap.add_argument("--out", default="benchmarks/results/meta_speed.json")
    ap.add_argument("--doc", default=None, help="also write the markdown table here (e.g. docs/benchmarks.md)")
    ap.add_argument("--interleaved", action="store_true",
                    help="time all variants in one process, rotating their order each round (no memory column)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # model:steps:variant:grad_file (worker)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.one:
        name, steps, variant, grad_file = args.one.split(":", 3)
        print(json.dumps(measure(name, int(steps), variant, device, args.iters, args.warmup, Path(grad_file))))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        for steps in args.steps:
            ref_grad = None
            chosen = [v for v in VARIANTS[name] if args.variants is None or v in args.variants]
            if args.interleaved:
                for row in interleaved(name, steps, chosen, device, args.iters, args.warmup):
                    rows.append(row)
                    print(_line(row), flush=True)
                continue
            for variant in sorted(chosen, key=lambda v: v != "autograd-loop"):  # the reference first
                grad_file = out.parent / f".grad_{name}_{steps}_{variant}.pt"
                cmd = [sys.executable, __file__, "--device", args.device, "--iters", str(args.iters),
                       "--warmup", str(args.warmup), "--one", f"{name}:{steps}:{variant}:{grad_file}"]
                run = subprocess.run(cmd, capture_output=True, text=True)
                if run.returncode != 0:
                    err = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"
                    row = {"model": name, "inner_steps": steps, "variant": variant, "error": err}
                else:
                    row = json.loads(run.stdout.strip().splitlines()[-1])
                    grad = torch.load(grad_file)
                    grad_file.unlink()
                    if variant == "autograd-loop":
                        ref_grad = grad
                    if ref_grad is not None:
                        row["grad_rel_err"] = ((grad - ref_grad).norm() / ref_grad.norm()).item()
                rows.append(row)
                print(_line(row), flush=True)
    machine = {"device": str(device), "cpu": _cpu_name(),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
               "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "meta_batch": T}
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    if args.doc:
        Path(args.doc).write_text(markdown(machine, rows) + "\n")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['model']:6} steps={r['inner_steps']} {r['variant']:14} ERROR {r['error']}"
    err = f"  grad rel err {r['grad_rel_err']:.1e}" if "grad_rel_err" in r else ""
    peak = f"  peak {r['peak_mib']:.0f} MiB" if "peak_mib" in r else "  (interleaved)"
    return f"{r['model']:6} steps={r['inner_steps']} {r['variant']:14} {r['median_s']:.3f} s/iter{peak}{err}"


def markdown(machine: dict, rows: list[dict]) -> str:
    where = machine["cuda"] or f"{machine['cpu']}, {machine['threads']} threads"
    how = ("all variants timed in one process, one iteration each per round in rotating order (no memory "
           "column)" if rows and rows[0].get("interleaved") else "each variant in its own process; peak memory "
           "of that process; gradient relative error against the per-task autograd loop (noise off)")
    lines = [f"Second-order MAML, meta-batch {machine['meta_batch']}, on {machine['device']} ({where}); torch "
             f"{machine['torch']}. Median seconds per meta-iteration (forward + backward of the outer loss) "
             f"over the measured iterations after warm-up; {how}.", "",
             "| model | inner steps | variant | s / meta-iteration | vs autograd-loop | peak MiB | grad rel. err |",
             "|---|---:|---|---:|---:|---:|---:|"]
    ref = {(r["model"], r["inner_steps"]): r["median_s"] for r in rows if r["variant"] == "autograd-loop"
           and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['inner_steps']} | {r['variant']} | failed: {r['error']} | | | |")
            continue
        base = ref.get((r["model"], r["inner_steps"]))
        speed = f"{base / r['median_s']:.2f}x" if base else ""
        err = f"{r['grad_rel_err']:.1e}" if "grad_rel_err" in r else ""
        peak = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "—"
        lines.append(f"| {r['model']} | {r['inner_steps']} | {r['variant']} | {r['median_s']:.3f} | {speed} | "
                     f"{peak} | {err} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Amortised inference of strokes from an image, and its refinement through the rasteriser.

A fixed-size view of a program for networks: up to `S` strokes of `M` control points each (clamped cubic
B-splines; a dot repeats one point), absolute canvas coordinates, with a presence probability per stroke.
`StrokeEncoder` maps an image to that view. It is trained on background drawings with two terms: the
control points of the drawer's own strokes (matched to the predicted strokes by the best of the S!
assignments, each stroke in either direction) and the Bernoulli likelihood of the image drawn by the
rasteriser. `refine` then takes gradient steps on the rendered likelihood of the given images.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metagen.data.concepts import ConceptSet
from metagen.data.strokes import FRAME, Drawing
from metagen.errors import DataError, TrainingDiverged
from metagen.nets import ConvEncoder, mlp
from metagen.programs.program import CANVAS, basis, fit_spline

EPS = 1e-3  # ink probabilities are kept in [EPS, 1 - EPS]: a stray pixel costs ~7 nats, not infinity


# -- the fixed-size view ----------------------------------------------------------------------------------
def drawing_targets(drawing: Drawing, strokes: int, control: int) -> tuple[np.ndarray, np.ndarray]:
    """(control points [S, M, 2] canvas units, present [S]) of a drawing's first S strokes."""
    cps = np.zeros((strokes, control, 2))
    present = np.zeros(strokes)
    for i, traj in enumerate(drawing[:strokes]):
        cps[i] = fit_spline(traj * (CANVAS / FRAME), control)
        present[i] = 1.0
    return cps, present


def render_batch(cps: torch.Tensor, presence: torch.Tensor, pen: torch.Tensor, size: int, blur: float = 0.5,
                 samples: int = 16) -> torch.Tensor:
    """Ink probabilities [B, size, size]: cps [B, S, M, 2] (canvas units), presence [B, S] in [0, 1], pen [B]
    (canvas units). A pixel is blank only if every stroke leaves it blank: 1 - prod_s (1 - presence_s ink_s)."""
    B, _, M, _ = cps.shape
    pts = basis(M, samples, cps.dtype).to(cps.device) @ cps  # [B, S, T, 2]
    a, b = pts[:, :, :-1], pts[:, :, 1:]  # [B, S, T-1, 2]
    centres = (torch.arange(size, dtype=cps.dtype, device=cps.device) + 0.5) * (CANVAS / size)
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    p = torch.stack([xx, yy], -1).view(1, 1, -1, 1, 2)  # [1, 1, P, 1, 2]
    a, ab = a[:, :, None], (b - a)[:, :, None]  # [B, S, 1, T-1, 2]
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-9)  # [B, S, P, T-1]
    d = (p - (a + t.clamp(0, 1)[..., None] * ab)).pow(2).sum(-1).add(1e-12).sqrt().min(-1).values  # [B, S, P]
    ink = torch.sigmoid((pen.view(B, 1, 1) / 2 - d) / blur)  # [B, S, P]
    blank = (1 - presence[..., None] * ink).prod(1)  # [B, P]
    return (1 - blank).view(B, size, size)


def bernoulli_nll(probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per-image NLL in nats [B] of binary images [B, H, W] under ink probabilities [B, H, W]."""
    probs = probs.clamp(EPS, 1 - EPS)
    return F.binary_cross_entropy(probs, images.to(probs.dtype), reduction="none").flatten(1).sum(-1)


# -- the encoder ------------------------------------------------------------------------------------------
class StrokeEncoder(nn.Module):
    """Images [B, 1, H, W] -> (control points [B, S, M, 2] canvas units, presence logits [B, S], pen [B])."""

    def __init__(self, size: int = 28, strokes: int = 4, control: int = 6, channels: int = 32,
                 hidden: int = 256) -> None:
        super().__init__()
        self.size, self.strokes, self.control = size, strokes, control
        self.features = ConvEncoder(1, size, channels, hidden, depth=1)
        self.head = mlp(hidden, hidden, strokes * (2 * control + 1) + 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, S, M = images.shape[0], self.strokes, self.control
        out = self.head(self.features(images.float()))
        cps = torch.sigmoid(out[:, : S * M * 2].view(B, S, M, 2)) * CANVAS
        logits = out[:, S * M * 2 : S * M * 2 + S]
        pen = 1.0 + F.softplus(out[:, -1])  # at least one canvas unit
        return cps, logits, pen


_PERMS: dict[int, torch.Tensor] = {}


def match_cost(pred: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean squared control-point distance (canvas units / 100) of the best assignment of predicted to target
    strokes, each target stroke in its better direction; [B]. pred, target: [B, S, M, 2]; present [B, S]."""
    S = pred.shape[1]
    if S not in _PERMS:
        _PERMS[S] = torch.tensor(list(itertools.permutations(range(S))))
    perms = _PERMS[S].to(pred.device)  # [P, S]
    p, t = pred / CANVAS, target / CANVAS
    fwd = (p[:, :, None] - t[:, None]).pow(2).sum(-1).mean(-1)  # [B, S_pred, S_target]
    rev = (p[:, :, None] - t[:, None].flip(-2)).pow(2).sum(-1).mean(-1)
    cost = torch.minimum(fwd, rev) * present[:, None]  # absent targets cost nothing
    # cost of each permutation: sum_j cost[b, perm[j], j]
    total = cost[:, perms, torch.arange(S)].sum(-1)  # [B, P]
    return total.min(-1).values / present.sum(-1).clamp(min=1)


def encoder_loss(encoder: StrokeEncoder, images: torch.Tensor, target: torch.Tensor, present: torch.Tensor,
                 render_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss of a batch: matched control points + presence BCE + the rendered image's NLL per pixel."""
    cps, logits, pen = encoder(images)
    geometry = match_cost(cps, target, present).mean()
    # presence: as many strokes as the drawer drew (the order of presence slots is free: sort both)
    count = F.binary_cross_entropy_with_logits(logits.sort(-1, descending=True).values,
                                               present.sort(-1, descending=True).values)
    nll = bernoulli_nll(render_batch(cps, torch.sigmoid(logits), pen, images.shape[-1]), images[:, 0])
    pixels = images.shape[-1] * images.shape[-2]
    loss = 100 * geometry + count + render_weight * nll.mean() / pixels
    return loss, {"geometry": geometry.item(), "count": count.item(), "nll": nll.mean().item()}


# -- refinement -------------------------------------------------------------------------------------------
def refine(cps: torch.Tensor, presence: torch.Tensor, pen: torch.Tensor, images: torch.Tensor, steps: int = 50,
           lr: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam steps on the control points, presence and pen of each image's program to lower its rendered NLL.
    Returns the refined (cps, presence, pen) and the final NLL [B]."""
    cps = cps.detach().clone().requires_grad_()
    logit = torch.logit(presence.detach().clamp(0.02, 0.98)).requires_grad_()
    log_pen = pen.detach().clamp(min=1.0).log().requires_grad_()
    opt = torch.optim.Adam([{"params": [cps], "lr": lr}, {"params": [logit, log_pen], "lr": 0.05}])
    size = images.shape[-1]
    for _ in range(steps):
        nll = bernoulli_nll(render_batch(cps, torch.sigmoid(logit), log_pen.exp(), size), images)
        opt.zero_grad()
        nll.sum().backward()
        opt.step()
        with torch.no_grad():
            cps.clamp_(0, CANVAS)
    with torch.no_grad():
        nll = bernoulli_nll(render_batch(cps, torch.sigmoid(logit), log_pen.exp(), size), images)
    return cps.detach(), torch.sigmoid(logit).detach(), log_pen.exp().detach(), nll



# -- data and training ------------------------------------------------------------------------------------
def stroke_examples(concepts: ConceptSet, drawings: dict[tuple[str, str], list[Drawing]], strokes: int,
                    control: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [N, 1, H, W], control points [N, S, M, 2], present [N, S]) of every example of `concepts` whose
    drawing is in `drawings` (keyed by (alphabet, character), in the images' order)."""
    images, cps, present = [], [], []
    for name, examples in zip(concepts.names, concepts.examples, strict=True):
        key = tuple(name.split("/", 1))
        if key not in drawings:
            continue
        for image, drawing in zip(examples, drawings[key], strict=False):
            c, p = drawing_targets(drawing, strokes, control)
            images.append(image)
            cps.append(torch.from_numpy(c).float())
            present.append(torch.from_numpy(p).float())
    if not images:
        raise DataError("no image has its stroke file: the stroke archives and the images name different characters")
    return torch.stack(images).float(), torch.stack(cps), torch.stack(present)


def train_encoder(encoder: StrokeEncoder, images: torch.Tensor, cps: torch.Tensor, present: torch.Tensor,
                  steps: int, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                  progress: bool = True) -> list[dict[str, float]]:
    """Adam on `encoder_loss` over random batches; returns one log row per 50 steps."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    log: list[dict[str, float]] = []
    bar = tqdm(range(steps), desc="stroke encoder", disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(len(images), (batch,), generator=g)
        loss, parts = encoder_loss(encoder, images[idx], cps[idx], present[idx])
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"stroke encoder loss became {loss.item()} at step {step}; lower lr (now {lr:g})")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 10.0)
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.append({"step": step + 1, "loss": loss.item(), **parts})
            bar.set_postfix(nll=f"{parts['nll']:.1f}", geometry=f"{parts['geometry']:.4f}")
    return log

"""The stroke-program generator: a character type (its strokes), motor noise that makes instances of it, a
prior over types, and inference of a type from a few images.

Generative story of one image of a character type theta = (control points [S, M, 2], which strokes are
present, pen width), as in Lake et al. (2015) in miniature:
    delta ~ p(delta): a shift [2] and log scale of the whole character, a log pen factor, and an independent
    jitter [S, M, 2] of every control point (the motor noise);
    x ~ Bernoulli(render(theta + delta)) pixel by pixel, the ink probabilities kept within [flip, 1 - flip].
Every scale of the noise is estimated from the background drawers' variation (`estimate_noise`). The
likelihood of an image given a type integrates delta out; `StrokeType.log_prob` returns an importance-weighted
lower bound on it with a proposal centred on the best delta for that image (found by gradient steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from metagen.data.strokes import Drawing
from metagen.programs.encoder import bernoulli_nll, drawing_targets, refine, render_batch
from metagen.programs.fit import program_from_control_points, relation
from metagen.programs.program import CANVAS, Program, _basis_np


@dataclass
class NoiseModel:
    shift: float = 3.0  # std of an instance's translation, canvas units
    log_scale: float = 0.08  # std of an instance's log size
    jitter: float = 1.5  # std of each control point's own displacement, canvas units
    log_pen: float = 0.1  # std of an instance's log pen width
    flip: float = 1e-3  # ink probabilities stay within [flip, 1 - flip]

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _robust_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if len(x) else math.nan


def estimate_noise(drawings: dict[tuple[str, str], list[Drawing]], strokes: int, control: int) -> NoiseModel:
    """Motor-noise scales from the drawers' variation: for each character whose drawers drew the same number
    of strokes (at most `strokes`), the spread of their centres, sizes and (after removing those) control points
    around the character's mean. Robust (median-based) spreads, so a drawer who drew it differently counts
    little."""
    shifts, scales, jitters = [], [], []
    for drawings_of_char in drawings.values():
        counts = [len(d) for d in drawings_of_char]
        k = max(set(counts), key=counts.count)
        same = [d for d in drawings_of_char if len(d) == k]
        if k > strokes or len(same) < 3:
            continue
        cps = np.stack([drawing_targets(d, k, control)[0] for d in same])  # [n, k, M, 2]
        # orient every stroke like the first drawer's
        ref = cps[0]
        flip = (np.abs(cps - ref).sum((-1, -2)) > np.abs(cps[:, :, ::-1] - ref).sum((-1, -2)))  # [n, k]
        cps = np.where(flip[..., None, None], cps[:, :, ::-1], cps)
        centre = cps.reshape(len(cps), -1, 2).mean(1)  # [n, 2]
        shifts.append(centre - centre.mean(0))
        radius = np.sqrt(((cps.reshape(len(cps), -1, 2) - centre[:, None]) ** 2).sum(-1).mean(-1))  # [n]
        scales.append(np.log(radius / radius.mean()))
        norm = (cps - centre[:, None, None]) / (radius / radius.mean())[:, None, None, None]
        jitters.append((norm - norm.mean(0)).ravel())
    if not shifts:
        raise ValueError("no character has three drawers with the same few strokes: cannot estimate motor noise")
    return NoiseModel(shift=_robust_std(np.concatenate(shifts).ravel()), log_scale=_robust_std(np.concatenate(scales)),
                      jitter=_robust_std(np.concatenate(jitters)))


# -- instances of a type ----------------------------------------------------------------------------------
def transform(cps: torch.Tensor, presence: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor,
              jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Control points [B, S, M, 2] of instances: each type (cps [B or 1, S, M, 2]) scaled about its centre by
    exp(log_scale) [B], shifted by shift [B, 2], plus jitter [B, S, M, 2]."""
    w = presence[..., None, None].expand_as(cps[..., :1])  # [B, S, M, 1]
    centre = (cps * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1e-6)  # [B, 2]
    out = centre[:, None, None] + log_scale.exp()[:, None, None, None] * (cps - centre[:, None, None])
    out = out + shift[:, None, None]
    return out if jitter is None else out + jitter


@dataclass
class StrokeType:
    """One character type: cps [S, M, 2] (canvas units), presence [S] in {0, 1}, pen width."""

    cps: torch.Tensor
    presence: torch.Tensor
    pen: float
    noise: NoiseModel
    size: int = 28

    def _delta_log_prior(self, shift: torch.Tensor, log_scale: torch.Tensor, log_pen: torch.Tensor,
                         jitter: torch.Tensor) -> torch.Tensor:
        """log p(delta) [B]; only present strokes' jitter counts."""
        n = self.noise
        mask = self.presence[None, :, None, None].expand_as(jitter)
        return (_normal(shift, n.shift).sum(-1) + _normal(log_scale, n.log_scale) + _normal(log_pen, n.log_pen)
                + (_normal(jitter, n.jitter) * mask).sum((1, 2, 3)))

    def _render(self, shift: torch.Tensor, log_scale: torch.Tensor, log_pen: torch.Tensor,
                jitter: torch.Tensor) -> torch.Tensor:
        B = shift.shape[0]
        cps = transform(self.cps[None].expand(B, -1, -1, -1), self.presence[None].expand(B, -1), shift, log_scale,
                        jitter)
        probs = render_batch(cps, self.presence[None].expand(B, -1), self.pen * log_pen.exp(), self.size)
        return probs.clamp(self.noise.flip, 1 - self.noise.flip)  # [B, H, W]

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        S, M = self.cps.shape[:2]
        noise, dtype = self.noise, self.cps.dtype

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=dtype)

        return (randn(n, 2) * noise.shift, randn(n) * noise.log_scale, randn(n) * noise.log_pen,
                randn(n, S, M, 2) * noise.jitter)

    def sample(self, n: int, generator: torch.Generator | None = None, binary: bool = False) -> torch.Tensor:
        """[n, 1, H, W] new instances: ink probabilities, or Bernoulli draws if `binary`."""
        with torch.no_grad():
            probs = self._render(*self.draw_noise(n, generator))[:, None]
        return torch.bernoulli(probs, generator=generator) if binary else probs

    def log_prob(self, x: torch.Tensor, iw_samples: int = 100, fit_steps: int = 40,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x | type) in nats, [B], for binary images x [B, 1, H, W]:
        the proposal q(delta | x) is centred on the delta that best explains x."""
        images = x[:, 0].float()
        B = images.shape[0]
        S, M = self.cps.shape[:2]
        dtype = self.cps.dtype
        # the best delta per image: MAP by Adam on log p(x | delta) + log p(delta)
        params = [torch.zeros(B, 2, dtype=dtype), torch.zeros(B, dtype=dtype), torch.zeros(B, dtype=dtype),
                  torch.zeros(B, S, M, 2, dtype=dtype)]
        for p in params:
            p.requires_grad_()
        opt = torch.optim.Adam(params, lr=0.3)
        scales = (self.noise.shift, self.noise.log_scale, self.noise.log_pen, self.noise.jitter)
        for _ in range(fit_steps):
            delta = [p * s for p, s in zip(params, scales, strict=True)]  # optimise in units of the prior's std
            loss = (bernoulli_nll(self._render(*delta), images) - self._delta_log_prior(*delta)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            mode = [p.detach() * s for p, s in zip(params, scales, strict=True)]
            # absent strokes draw nothing: their jitter is neither in the prior nor in the proposal
            mask = self.presence[None, :, None, None].expand(B, S, M, 2)
            log_w = []
            for _ in range(iw_samples):
                # defensive proposal: an even mixture of normals around the mode with half and all of the prior's
                # spread (the wide half keeps the weights' variance finite)
                wide = torch.rand(B, generator=generator, dtype=dtype) < 0.5
                eps = [torch.randn(m.shape, generator=generator, dtype=dtype) for m in mode]
                eps[3] = eps[3] * mask
                delta = [m + e * s * torch.where(wide, 1.0, 0.5).view(-1, *[1] * (e.dim() - 1))
                         for m, e, s in zip(mode, eps, scales, strict=True)]
                log_q = torch.logsumexp(torch.stack([self._proposal_log_prob(delta, mode, mask, f)
                                                     for f in (0.5, 1.0)]), 0) - math.log(2)
                log_w.append(-bernoulli_nll(self._render(*delta), images) + self._delta_log_prior(*delta) - log_q)
            return torch.logsumexp(torch.stack(log_w), 0) - math.log(iw_samples)

    def _proposal_log_prob(self, delta: list[torch.Tensor], mode: list[torch.Tensor], mask: torch.Tensor,
                           factor: float) -> torch.Tensor:
        """log N(delta; mode, (factor * prior std)^2) [B], over the present strokes' jitter only."""
        n = self.noise
        shift, log_scale, log_pen, jitter = (d - m for d, m in zip(delta, mode, strict=True))
        return (_normal(shift, factor * n.shift).sum(-1) + _normal(log_scale, factor * n.log_scale)
                + _normal(log_pen, factor * n.log_pen) + (_normal(jitter, factor * n.jitter) * mask).sum((1, 2, 3)))

    def program(self) -> Program:
        """The type as a readable program: present strokes in order, each start related to an earlier stroke
        when it lies on one."""
        return program_from_control_points(list(self.cps[self.presence > 0.5].double().numpy()), float(self.pen))


def _normal(x: torch.Tensor, std: float) -> torch.Tensor:
    return -0.5 * (x / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


# -- inference of a type from k images --------------------------------------------------------------------
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]  # images -> (cps, presence logits, pen), e.g. StrokeEncoder


def infer_type(encoder: Encode, support: torch.Tensor, noise: NoiseModel, refine_steps: int = 40,
               joint_steps: int = 40, keep_strokes: bool = False, image_jitter: bool = False) -> StrokeType:
    """The type behind k support images [K, 1, H, W]: the encoder's strokes for each image, refined on it; the
    one that best explains all K images; then refined on all of them at once, each image with its own shift
    and size (penalised by the noise model). `keep_strokes`: the joint refit keeps the chosen candidate's
    strokes (else their presence is refitted too, and strokes the images draw differently can vanish);
    `image_jitter`: each image also gets its own control-point jitter there (penalised like the rest)."""
    images = support[:, 0].float()
    K, size = images.shape[0], images.shape[-1]
    with torch.no_grad():
        cps, logits, pen = encoder(support.float())
    cps, presence, pen, _ = refine(cps, torch.sigmoid(logits), pen, images, steps=refine_steps)
    with torch.no_grad():  # candidate j scored on every image i: [K_candidates, K_images]
        probs = render_batch(cps, presence, pen, size)  # [K, H, W]
        score = torch.stack([bernoulli_nll(probs[j].expand(K, -1, -1), images) for j in range(K)])
    best = int(score.sum(1).argmin())
    theta = cps[best].clone().requires_grad_()
    chosen = _at_least_one(presence[best])
    logit = torch.logit(presence[best].clamp(0.02, 0.98)).clone().requires_grad_()
    log_pen = pen[best].log().clone().requires_grad_()
    shift = torch.zeros(K, 2, requires_grad=True)
    log_scale = torch.zeros(K, requires_grad=True)
    jitter = torch.zeros(K, *theta.shape, requires_grad=image_jitter)  # [K, S, M, 2]
    scalars = [log_pen, log_scale] + ([] if keep_strokes else [logit])
    opt = torch.optim.Adam([{"params": [theta], "lr": 1.0}, {"params": scalars, "lr": 0.05},
                            {"params": [shift] + ([jitter] if image_jitter else []), "lr": 0.5}])
    for _ in range(joint_steps):
        p = (chosen if keep_strokes else torch.sigmoid(logit))[None].expand(K, -1)
        inst = transform(theta[None].expand(K, -1, -1, -1), p, shift, log_scale, jitter)
        nll = bernoulli_nll(render_batch(inst, p, log_pen.exp().expand(K), size), images).sum()
        prior = -(_normal(shift, noise.shift).sum() + _normal(log_scale, noise.log_scale).sum())
        if image_jitter:
            prior = prior - (_normal(jitter, noise.jitter) * p[:, :, None, None]).sum()
        opt.zero_grad()
        (nll + prior).backward()
        opt.step()
    presence = chosen if keep_strokes else _at_least_one(torch.sigmoid(logit).detach())
    return StrokeType(theta.detach().clamp(0, CANVAS), presence, float(log_pen.detach().exp()), noise, size)


def _at_least_one(presence: torch.Tensor) -> torch.Tensor:
    """Presence probabilities [S] -> {0, 1} strokes, the likeliest kept if none passes 0.5."""
    out = (presence > 0.5).float()
    if out.sum() == 0:
        out[presence.argmax()] = 1.0
    return out


# -- a prior over types: new characters ---------------------------------------------------------------------
@dataclass
class ProgramPrior:
    """A distribution over character types learned from background drawings: how many strokes, how each starts
    (anywhere, at the start or end of an earlier stroke, or along one), where a free stroke starts, and the shape
    of a stroke (its control points relative to its start: one full-covariance normal)."""

    stroke_counts: torch.Tensor  # [S] probability of 1..S strokes
    relations: torch.Tensor  # [4] probability of at / start / end / along for strokes after the first
    starts: torch.Tensor  # [N, 2] free strokes' starts seen in the background (sampled with a little blur)
    shape_mean: torch.Tensor  # [(M - 1) * 2]
    shape_cov: torch.Tensor  # [(M - 1) * 2, (M - 1) * 2]
    pen: float = 4.5
    blur: float = 2.0  # canvas units of the start's blur

    @classmethod
    def fit(cls, cps: torch.Tensor, present: torch.Tensor, pen: float = 4.5) -> ProgramPrior:
        """From background strokes in the fixed-size view: cps [N, S, M, 2], present [N, S]."""
        S = cps.shape[1]
        counts = torch.bincount(present.sum(1).long().clamp(1, S) - 1, minlength=S).double()
        rel_counts = torch.zeros(4, dtype=torch.float64)
        starts, shapes = [], []
        names = ("at", "start", "end", "along")
        for drawing, mask in zip(cps.double().numpy(), present.numpy(), strict=True):
            earlier: list[np.ndarray] = []
            for cp in drawing[mask > 0.5]:
                rel = relation(cp[0], earlier)[0] if earlier else "at"
                if earlier:
                    rel_counts[names.index(rel)] += 1
                if rel == "at":
                    starts.append(cp[0])
                shapes.append((cp[1:] - cp[0]).ravel())
                earlier.append(cp)
        shapes_t = torch.from_numpy(np.stack(shapes))
        cov = torch.cov(shapes_t.T) + 1e-3 * torch.eye(shapes_t.shape[1], dtype=torch.float64)
        return cls(counts / counts.sum(), (rel_counts + 1) / (rel_counts.sum() + 4), torch.from_numpy(np.stack(starts)),
                   shapes_t.mean(0), cov, pen)

    def sample(self, noise: NoiseModel, generator: torch.Generator | None = None, size: int = 28) -> StrokeType:
        """A new character type."""
        S = len(self.stroke_counts)
        M = self.shape_mean.shape[0] // 2 + 1
        n = int(torch.multinomial(self.stroke_counts, 1, generator=generator)) + 1
        shape_dist = torch.distributions.MultivariateNormal(self.shape_mean, self.shape_cov)
        cps = torch.zeros(S, M, 2, dtype=torch.float64)
        for i in range(n):
            rel = "at" if i == 0 else ("at", "start", "end", "along")[
                int(torch.multinomial(self.relations, 1, generator=generator))]
            j = int(torch.randint(i, (1,), generator=generator)) if i else 0
            if rel == "at":
                k = int(torch.randint(len(self.starts), (1,), generator=generator))
                start = self.starts[k] + self.blur * torch.randn(2, generator=generator, dtype=torch.float64)
            elif rel == "start":
                start = cps[j, 0]
            elif rel == "end":
                start = cps[j, -1]
            else:
                u = float(torch.rand(1, generator=generator))
                start = torch.from_numpy(_basis_np(M, 65)[round(u * 64)]) @ cps[j]
            # MultivariateNormal.sample takes no generator: draw through its Cholesky factor
            z = torch.randn(self.shape_mean.shape[0], generator=generator, dtype=torch.float64)
            offsets = (self.shape_mean + shape_dist.scale_tril @ z).view(M - 1, 2)
            cps[i] = torch.cat([start[None], start[None] + offsets]).clamp(0, CANVAS)
        presence = (torch.arange(S) < n).double()
        return StrokeType(cps, presence, self.pen, noise, size)

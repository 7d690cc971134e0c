"""Stroke programs as a meta-learner: a support set -> the character type (a program of strokes) behind it.

`metagen train` with `learner.name = "programs"` learns, from the background alphabets' pen trajectories only:
the motor noise (`estimate_noise`), the prior over programs (`ProgramPrior`), and the stroke encoder (image ->
strokes), trained by the one training loop: each task's images are looked up in the trajectories of the
background drawings, and the encoder is fitted to the drawer's strokes and to the rendered image
(`encoder_loss`). `adapt(support)` infers a type from the k images (encoder, then gradient steps on the rendered
likelihood); its `sample` draws instances with motor noise, its `log_prob` is an importance-weighted lower
bound, and `program()` is the type as text. `prior()` imagines a new character from the prior over programs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from metagen.config import Config, GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError, DataError
from metagen.meta.base import Adapted, MetaLearner
from metagen.programs.encoder import StrokeEncoder, encoder_loss
from metagen.programs.model import NoiseModel, ProgramPrior, StrokeType, infer_type
from metagen.programs.program import CANVAS, Program
from metagen.registry import LEARNERS

STARTS = 1024  # free-stroke starts kept for the prior (a fixed number, so a checkpoint has fixed shapes)
NOISE_FIELDS = tuple(f.name for f in dataclasses.fields(NoiseModel))


class ProgramsConfig(LearnerConfig):
    name: Literal["programs"] = "programs"
    strokes: int = Field(4, ge=1, le=6)  # strokes of a type at most (matching tries all S! assignments)
    control: int = Field(6, ge=2, le=12)  # control points per stroke
    channels: int = Field(32, ge=1)  # stroke encoder
    hidden: int = Field(256, ge=1)
    render_weight: float = Field(1.0, ge=0)  # weight of the rendered image's NLL in the encoder loss
    # training images and their strokes moved by one random similarity transform each (rotation up to this many
    # radians, size by up to +-augment/2 in log, shift up to 50 * augment canvas units); 0: as drawn
    augment: float = Field(0.0, ge=0, le=0.5)
    # multiple of the drawers' control-point spread an instance gets; 0.5 was best of {1, 0.5, 0.25} by 1-shot NLL
    # on the background validation characters (docs/results.md)
    jitter_factor: float = Field(0.5, gt=0)
    flip: float = Field(1e-3, gt=0, lt=0.5)  # ink probabilities stay within [flip, 1 - flip]
    refine_steps: int = Field(40, ge=0)  # gradient steps on each support image's strokes
    joint_steps: int = Field(40, ge=0)  # then on the chosen type against all k images
    keep_strokes: bool = False  # the joint refit keeps the chosen candidate's strokes (else refits their presence)
    image_jitter: bool = False  # ... and gives each support image its own control-point jitter
    fit_steps: int = Field(40, ge=0)  # per query: steps to the best motor noise, the bound's proposal centre


@LEARNERS.register("programs")
class StrokePrograms(MetaLearner):
    Config = ProgramsConfig
    uses_generator = False
    stochastic_prior = True

    def __init__(self, cfg: ProgramsConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        if len(example_shape) != 3 or example_shape[0] != 1 or example_shape[1] != example_shape[2]:
            raise ConfigError(f"learner 'programs' draws square one-channel images, got examples of shape "
                              f"{list(example_shape)}; use data.source = 'omniglot'")
        S, M = cfg.strokes, cfg.control
        self.size = example_shape[-1]
        self.encoder = StrokeEncoder(self.size, S, M, cfg.channels, cfg.hidden)
        # learned from the background trajectories by `fit_data`, saved with the weights
        self.register_buffer("fitted", torch.zeros(()))
        self.register_buffer("noise", torch.zeros(len(NOISE_FIELDS), dtype=torch.float64))
        self.register_buffer("stroke_counts", torch.zeros(S, dtype=torch.float64))
        self.register_buffer("relations", torch.zeros(4, dtype=torch.float64))
        self.register_buffer("starts", torch.zeros(STARTS, 2, dtype=torch.float64))
        self.register_buffer("shape_mean", torch.zeros((M - 1) * 2, dtype=torch.float64))
        self.register_buffer("shape_cov", torch.eye((M - 1) * 2, dtype=torch.float64))
        self._table: dict[bytes, int] = {}  # a background image's bytes -> its row in the stroke targets
        self._targets: tuple[torch.Tensor, torch.Tensor] | None = None  # cps [N, S, M, 2], present [N, S]

    # -- what training learns besides the encoder ------------------------------------------------------------
    def fit_data(self, config: Config, splits: Any, data_dir: str | None) -> None:
        """Read the pen trajectories of the background and validation alphabets (never the held-out ones): the
        encoder's targets, the motor noise and the prior over programs."""
        from metagen.data import resolve_data_dir
        from metagen.data.strokes import load_strokes
        from metagen.programs.encoder import stroke_examples
        from metagen.programs.model import estimate_noise

        d = config.data
        if d.source != "omniglot":
            raise ConfigError(f"learner 'programs' learns from Omniglot's pen trajectories; data.source is "
                              f"'{d.source}': set data.source = 'omniglot'")
        if d.rotations or d.mirrors:
            raise ConfigError("learner 'programs' needs the drawings as drawn: set data.rotations = false and "
                              "data.mirrors = false (rotated characters have no pen trajectories)")
        root = resolve_data_dir(d.data_dir, data_dir)
        if root is None:
            raise DataError("learner 'programs' needs Omniglot's stroke files: pass --data-dir DIR or set "
                            "METAGEN_DATA_DIR to the folder holding strokes_background*.zip")
        groups = set(splits.background.group_names) | set(splits.validation.group_names)
        held_out = groups & set(splits.test_groups)
        if held_out:  # cannot happen with a valid split; the held-out strokes must never be read
            raise DataError(f"held-out groups {sorted(held_out)} are among the training groups")
        drawings = load_strokes(root, groups=groups)
        S, M = self.cfg.strokes, self.cfg.control
        parts = [stroke_examples(c, drawings, S, M) for c in (splits.background, splits.validation) if len(c)]
        noise = estimate_noise(drawings, S, M)
        self.learn_strokes(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                           torch.cat([p[2] for p in parts]), noise, prior_rows=len(parts[0][0]),
                           seed=config.train.seed)

    def learn_strokes(self, images: torch.Tensor, cps: torch.Tensor, present: torch.Tensor, noise: NoiseModel,
                      prior_rows: int | None = None, seed: int = 0) -> None:
        """Keep images [N, 1, H, W] with their strokes (cps [N, S, M, 2], present [N, S]) as the encoder's
        training targets; keep the drawers' motor noise and fit the prior over programs on the first `prior_rows`
        drawings (None: all)."""
        self._table = {}
        for i, image in enumerate(images):
            self._table.setdefault(_key(image), i)
        self._targets = (cps.float(), present.float())
        prior = ProgramPrior.fit(cps[:prior_rows], present[:prior_rows])
        keep = torch.randint(len(prior.starts), (STARTS,), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            self.noise.copy_(torch.tensor([getattr(noise, f) for f in NOISE_FIELDS], dtype=torch.float64))
            self.stroke_counts.copy_(prior.stroke_counts)
            self.relations.copy_(prior.relations)
            self.starts.copy_(prior.starts[keep])
            self.shape_mean.copy_(prior.shape_mean)
            self.shape_cov.copy_(prior.shape_cov)
            self.fitted.fill_(1.0)

    @property
    def noise_model(self) -> NoiseModel:
        """The drawers' motor noise with this config's jitter factor and flip rate (both adaptation settings)."""
        self._check_fitted()
        drawers = NoiseModel(**{f: float(v) for f, v in zip(NOISE_FIELDS, self.noise.tolist(), strict=True)})
        return dataclasses.replace(drawers, jitter=drawers.jitter * self.cfg.jitter_factor, flip=self.cfg.flip)

    @property
    def program_prior(self) -> ProgramPrior:
        self._check_fitted()
        return ProgramPrior(self.stroke_counts.cpu(), self.relations.cpu(), self.starts.cpu(), self.shape_mean.cpu(),
                            self.shape_cov.cpu())

    def _check_fitted(self) -> None:
        if not self.fitted.item():
            raise DataError("this 'programs' learner has not read any pen trajectories yet; train it with "
                            "`metagen train --config omniglot-programs`")

    # -- the training loop's surface ----------------------------------------------------------------------------
    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        """The stroke encoder's loss on every image of the batch (support and query alike), each against its
        drawer's strokes."""
        if self._targets is None:
            raise DataError("learner 'programs' trains on images with pen trajectories: `metagen train` reads them "
                            "(fit_data) before the first step")
        images = torch.cat([tasks.support, tasks.query], 1).flatten(0, 1)  # [T*(K+Q), 1, H, W]
        rows = [self._table.get(_key(x)) for x in images.cpu()]
        if None in rows:
            raise DataError("an image of this batch has no pen trajectory; learner 'programs' trains on the "
                            "background Omniglot drawings as drawn (no rotations, mirrors or other data)")
        idx = torch.tensor(rows)
        cps, present = self._targets[0][idx].to(images.device), self._targets[1][idx].to(images.device)
        if self.training and self.cfg.augment > 0:
            images, cps = augment(images, cps, self.cfg.augment)
        return encoder_loss(self.encoder, images, cps, present, self.cfg.render_weight)[0]

    def adapt(self, support: torch.Tensor) -> ProgramAdapted:
        self.check_support(support)
        noise = self.noise_model
        device = self.fitted.device

        def encode(images: torch.Tensor) -> tuple[torch.Tensor, ...]:  # the encoder on its device, the rest on CPU
            return tuple(t.cpu() for t in self.encoder(images.to(device)))

        # inference takes a few hundred small gradient steps: on the CPU, also where the caller is in no_grad
        with torch.enable_grad():
            ty = infer_type(encode, support.float().cpu(), noise, self.cfg.refine_steps, self.cfg.joint_steps,
                            self.cfg.keep_strokes, self.cfg.image_jitter)
        return ProgramAdapted(ty, self.cfg.fit_steps)

    def prior(self, generator: torch.Generator | None = None) -> ProgramAdapted:
        ty = self.program_prior.sample(self.noise_model, generator=_cpu(generator), size=self.size)
        return ProgramAdapted(ty, self.cfg.fit_steps)


class ProgramAdapted(Adapted):
    """One inferred (or imagined) character type: new instances, a likelihood bound, and its program."""

    def __init__(self, ty: StrokeType, fit_steps: int = 40) -> None:
        self.type, self.fit_steps = ty, fit_steps

    def sample(self, n: int, generator: torch.Generator | None = None, binary: bool = False) -> torch.Tensor:
        """[n, 1, H, W] ink probabilities of new instances (Bernoulli draws if `binary`)."""
        return self.type.sample(n, generator=_cpu(generator), binary=binary).float()

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.enable_grad():
            lp = self.type.log_prob(x.cpu(), iw_samples, self.fit_steps, generator=_cpu(generator))
        return lp.to(x.device).float()

    def program(self) -> Program:
        return self.type.program()


def augment(images: torch.Tensor, cps: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, 1, H, W] (binary) and their strokes cps [B, S, M, 2] (canvas units) moved alike by a random
    similarity transform about the canvas centre each; the images resampled and thresholded to stay binary."""
    B = images.shape[0]
    angle = (torch.rand(B, device=images.device) * 2 - 1) * strength
    scale = ((torch.rand(B, device=images.device) * 2 - 1) * strength / 2).exp()
    shift = (torch.rand(B, 2, device=images.device) * 2 - 1) * strength  # canvas half-widths: [-1, 1] coordinates
    cos, sin = angle.cos(), angle.sin()
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [B, 2, 2]
    forward = scale[:, None, None] * rot  # u' = forward u + shift, u in [-1, 1] canvas coordinates
    half = CANVAS / 2
    moved = ((cps - half) / half) @ forward.transpose(1, 2)[:, None] + shift[:, None, None]  # [B, S, M, 2]
    # grid_sample reads the input at inverse(u'): u = forward^-1 (u' - shift)
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([inverse, -(inverse @ shift[..., None])], -1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (warped > 0.5).to(images.dtype), (moved * half + half).clamp(0, CANVAS)


def _key(image: torch.Tensor) -> bytes:
    """An image's identity for the stroke lookup: its binarised pixels."""
    return (image > 0.5).to(torch.uint8).cpu().numpy().tobytes()


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """Inference runs on the CPU: a CUDA generator is replaced by a CPU one seeded from it."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator,
                                                           device=generator.device)))

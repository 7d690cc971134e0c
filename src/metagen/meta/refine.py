"""Retrieve and refine (fonts): the set-conditioned content/style model, given the nearest training faces.

Few-shot font generation has a strong non-parametric baseline: the training typeface whose glyphs of the
support's characters are nearest in L1, drawn in full (`retrieval` in the fonts bench). This learner starts
from it. `fit_data` keeps every training typeface's glyphs in a bank (buffers, so they travel in the
checkpoint); for a support set it finds the `neighbours` nearest faces in the bank, and every example gains
their glyphs of its character as extra content channels:

    x [N, 2, H, W] (glyph, reference)  ->  [N, 2 + m, H, W] (glyph, reference, glyph in face 1..m)

The set encoder reads the augmented support (so it sees where the support departs from its neighbours) and
the `fontgen` decoder draws the glyph from the augmented content, with the content images also at its last
layer: the model learns a correction of the retrieved glyph, in the style of the support. A character no
retrieved face has (the unseen-content split) gets the reference glyph in its place, as in the baseline.

With `parts` > 0 the decoder also attends over the support's parts: each support example (augmented as
above) is encoded to an H/4 x W/4 map of tokens (with their coordinates), and every position of a target
character's content code reads from them, so a stroke the support draws unlike its neighbours (an `O`'s
bowl in the support, a `Q`'s in the target) can be carried over instead of summarised in one code.

In training, faces that draw the support exactly (the task's own face, or a copy of it) are excluded with
their whole families, since held-out families are never in the bank.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from metagen.config import Config, GeneratorConfig
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError, DataError
from metagen.generators.base import Generator
from metagen.generators.fontgen import coordinates
from metagen.meta.base import Adapted, GeneratorAdapted
from metagen.meta.context import ContextConfig, SetConditioned
from metagen.meta.functional import call
from metagen.registry import LEARNERS


class RefineConfig(ContextConfig):
    name: Literal["refine"] = "refine"  # type: ignore[assignment]
    neighbours: int = Field(1, ge=1, le=8)  # nearest training faces whose glyphs join the content
    kl_weight: float = Field(0.01, ge=0)
    # 0: draw the decoder's glyph. > 0: draw, for each character, the glyph of one of the `select` nearest
    # faces, the one the decoder finds most likely (a real glyph, chosen per character by the learned style);
    # the decoder's glyph where no candidate face has the character.
    select: int = Field(0, ge=0, le=64)
    # "char": each character's likeliest candidate glyph; "face": one candidate face for every character, the
    # one whose glyphs (of the characters all candidates draw) are likeliest in all, so the drawn alphabet is
    # one real typeface; characters it lacks come from the next-ranked face that has them.
    select_by: Literal["char", "face"] = "char"
    # Adam steps on the style code (from the set encoder) that raise the support's own likelihood; 0: none.
    tune_steps: int = Field(0, ge=0)
    tune_lr: float = Field(0.05, gt=0)
    # Width of the support-part tokens the decoder attends over (H/4 x W/4 per support glyph); 0: no attention.
    parts: int = Field(0, ge=0)
    parts_channels: int = Field(32, ge=1)  # the part encoder's first conv width


@LEARNERS.register("refine")
class RetrieveRefine(SetConditioned):
    Config = RefineConfig  # type: ignore[assignment]
    data_sized = ("class_refs", "glyph_bits", "has_glyph", "family")  # the bank: resized when a checkpoint loads

    @classmethod
    def incompatible(cls, generator: type[Generator]) -> str | None:
        if generator.registry_name != "fontgen":  # type: ignore[attr-defined]
            return (f"learner 'refine' retrieves glyphs of training typefaces, for generator 'fontgen' only; got "
                    f"'{generator.registry_name}'")  # type: ignore[attr-defined]
        return None

    def __init__(self, cfg: RefineConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        C, H, W = example_shape
        if cfg.parts and cfg.parts < 3:
            raise ConfigError(f"learner.parts = {cfg.parts}: a part token holds its 2 coordinates and at least one "
                              "feature; use 0 (no attention) or 3 or more, e.g. 64")
        super().__init__(cfg, generator_cfg, (C + cfg.neighbours, H, W))  # encoder and generator see m more
        self.example_shape = tuple(example_shape)
        ch = cfg.parts_channels
        self.parts = nn.Sequential(  # augmented support example [C + m, H, W] -> part features [parts - 2, H/4, W/4]
            nn.Conv2d(C + cfg.neighbours, ch, 3, padding=1), nn.ReLU(),
            nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * ch, cfg.parts - 2, 4, stride=2, padding=1),
        ) if cfg.parts else None
        # The bank (filled by fit_data; empty shapes until then, resized when a checkpoint loads):
        self.register_buffer("class_refs", torch.zeros(0, H, W, dtype=torch.uint8))  # [G, H, W] reference glyphs
        self.register_buffer("glyph_bits", torch.zeros(0, 0, (H * W + 7) // 8, dtype=torch.uint8))  # [F, G, bytes]
        self.register_buffer("has_glyph", torch.zeros(0, 0, dtype=torch.bool))  # [F, G]
        self.register_buffer("family", torch.zeros(0, dtype=torch.int64))  # [F]
        self._glyphs: torch.Tensor | None = None  # glyph_bits unpacked, [F, G, H, W] uint8

    def memory_dim(self, cfg: ContextConfig) -> int:
        return cfg.parts  # type: ignore[attr-defined]

    def memory(self, support: torch.Tensor) -> torch.Tensor | None:
        """Augmented support sets [T, K, C + m, H, W] -> part tokens [T, K * H/4 * W/4, parts] (features and
        coordinates), or None without `parts`."""
        if self.parts is None:
            return None
        T, K = support.shape[:2]
        f = self.parts(support.flatten(0, 1).float())  # [T*K, parts - 2, h, w]
        f = torch.cat([f, coordinates(*f.shape[-2:], f).expand(len(f), -1, -1, -1)], 1)
        return f.view(T, K, self.cfg.parts, -1).permute(0, 1, 3, 2).reshape(T, -1, self.cfg.parts)

    # -- the bank ----------------------------------------------------------------------------------------------
    def fit_data(self, config: Config, splits: Any, data_dir: str | None) -> None:
        """Keep the background typefaces' glyphs, one class per distinct reference glyph (homoglyphs share)."""
        if getattr(splits, "fonts", None) is None:
            raise ConfigError("learner 'refine' retrieves glyphs of training typefaces: use data.source = 'fonts'")
        bg = splits.background
        H, W = self.example_shape[1:]
        examples = [ex.to(torch.uint8).cpu() for ex in bg.examples]  # binary glyph pairs
        classes: dict[bytes, int] = {}
        refs_seen: list[torch.Tensor] = []
        for ex in examples:
            for ref in ex[:, 1]:
                if classes.setdefault(ref.numpy().tobytes(), len(classes)) == len(refs_seen):
                    refs_seen.append(ref)
        F_, G = len(examples), len(classes)
        glyphs = torch.zeros(F_, G, H, W, dtype=torch.uint8)
        has = torch.zeros(F_, G, dtype=torch.bool)
        for f, ex in enumerate(examples):
            for glyph, ref in zip(ex[:, 0], ex[:, 1], strict=True):
                g = classes[ref.numpy().tobytes()]
                if not has[f, g]:  # the first of a face's homoglyphs stands for the class
                    glyphs[f, g], has[f, g] = glyph, True
        refs = torch.stack(refs_seen)
        names = {n: i for i, n in enumerate(dict.fromkeys(bg.groups))}
        device = self.family.device
        self.class_refs = refs.to(device)
        self.glyph_bits = torch.from_numpy(np.packbits(glyphs.flatten(2).numpy() > 0, axis=-1)).to(device)
        self.has_glyph = has.to(device)
        self.family = torch.tensor([names[g] for g in bg.groups], dtype=torch.int64, device=device)
        self._glyphs = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in self.data_sized:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.family.device))
        self._glyphs = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def bank(self) -> torch.Tensor:
        """Every bank glyph, [F, G, H, W] in {0, 1} (uint8)."""
        if len(self.family) == 0:
            raise DataError("this 'refine' model has no typeface bank (it was built, not trained): train it with "
                            "`metagen train --config fonts-refine`")
        if self._glyphs is None or self._glyphs.device != self.glyph_bits.device:
            H, W = self.example_shape[1:]
            bits = np.unpackbits(self.glyph_bits.cpu().numpy(), axis=-1, count=H * W)
            self._glyphs = torch.from_numpy(bits).view(*self.glyph_bits.shape[:2], H, W).to(self.glyph_bits.device)
        return self._glyphs

    def classes_of(self, refs: torch.Tensor) -> torch.Tensor:
        """Reference glyphs [N, H, W] -> their class in the bank [N], -1 where none matches exactly (two
        characters' reference glyphs can differ by 2 pixels, I and l; a user's own drawing matches none)."""
        table = self.class_refs.flatten(1).to(refs.dtype)  # [G, HW]
        d = torch.cdist(refs.flatten(1)[None], table[None], p=1)[0]  # [N, G] pixels that differ
        best, cls = d.min(1)
        return torch.where(best == 0, cls, torch.full_like(cls, -1))

    def nearest(self, support: torch.Tensor, exclude_exact: bool = False, m: int | None = None) -> torch.Tensor:
        """Support pairs [K, 2, H, W] -> the m (default `neighbours`) nearest bank faces [m] (by mean L1 over the
        support's characters; faces missing one of them are skipped), -1 where there is none."""
        bank, m = self.bank(), m or self.cfg.neighbours
        cls = self.classes_of(support[:, 1].float())
        keep = cls >= 0
        if not keep.any():
            return torch.full((m,), -1, dtype=torch.int64, device=support.device)
        cls, glyphs = cls[keep], support[keep, 0].float()  # [K'], [K', H, W]
        theirs = bank[:, cls].float()  # [F, K', H, W]
        d = (theirs - glyphs).abs().flatten(1).mean(1)  # [F]
        d = torch.where(self.has_glyph[:, cls].all(1), d, torch.full_like(d, torch.inf))
        if exclude_exact:
            same = torch.isin(self.family, self.family[d == 0])
            d = torch.where(same, torch.full_like(d, torch.inf), d)
        dist, faces = d.topk(min(m, len(d)), largest=False)
        faces = torch.where(torch.isfinite(dist), faces, torch.full_like(faces, -1))
        return torch.cat([faces, faces.new_full((m - len(faces),), -1)])

    def retrieved(self, content: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Content images [N, H, W] -> each one's character in the faces [m]: [N, m, H, W]; the content image
        itself where a face lacks the character or the image is no reference glyph."""
        return self.retrieved_where(content, faces)[0]

    def retrieved_where(self, content: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`retrieved`, and where the glyph is the face's own [N, m] (bool)."""
        bank = self.bank()
        cls = self.classes_of(content.float())  # [N]
        out = content.float()[:, None].repeat(1, len(faces), 1, 1)
        found = torch.zeros(out.shape[:2], dtype=torch.bool, device=out.device)
        for j, f in enumerate(faces.tolist()):
            ok = (cls >= 0) & (f >= 0)
            if f >= 0:
                ok &= self.has_glyph[f, cls.clamp(min=0)]
            out[ok, j] = bank[f, cls[ok]].to(out.dtype)
            found[:, j] = ok
        return out, found

    def content(self, refs: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Reference glyphs [N, H, W] -> the decoder's content [N, 1 + m, H, W]: each with the faces' glyphs of
        its character."""
        return torch.cat([refs.float()[:, None], self.retrieved(refs, faces)], 1)

    def augment(self, x: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Pairs [N, 2, H, W] -> [N, 2 + m, H, W] with the faces' glyphs of each example's character."""
        return torch.cat([x[:, :1].float(), self.content(x[:, 1], faces)], 1)

    # -- the learner surface -----------------------------------------------------------------------------------
    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        support, query = [], []
        for sup, qry in zip(tasks.support, tasks.query, strict=True):
            faces = self.nearest(sup, exclude_exact=True)
            support.append(self.augment(sup, faces))
            query.append(self.augment(qry, faces))
        augmented = Tasks(torch.stack(support), torch.stack(query), tasks.concepts, tasks.support_ids,
                          tasks.query_ids)
        return super().meta_loss(augmented)  # the context learner's loss on the augmented examples

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        faces = self.nearest(support)
        augmented = self.augment(support, faces)
        mu, _ = self.encoder(augmented[None])
        memory = self.memory(augmented[None])
        memory = None if memory is None else memory[0]
        if self.cfg.tune_steps:
            mu = self.tune(mu[0], augmented, memory)[None]
        candidates = self.nearest(support, m=self.cfg.select) if self.cfg.select else None
        return RefineAdapted(self, mu[0], faces, candidates, memory)

    def tune(self, code: torch.Tensor, support: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Style code [D] -> the code after `tune_steps` Adam steps on -log p(support | code), [D] (detached;
        the weights are untouched)."""
        code = code.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([code], lr=self.cfg.tune_lr)
        with torch.enable_grad():
            for _ in range(self.cfg.tune_steps):
                opt.zero_grad()
                loss = -self.generator.log_prob(support, code, memory).mean()
                (grad,) = torch.autograd.grad(loss, code)
                code.grad = grad
                opt.step()
        return code.detach()

    def zero_shot(self) -> Adapted:
        return RefineAdapted(self, super().zero_shot().cond, self._no_faces(), memory=self.blank_memory())

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        return RefineAdapted(self, super().prior(generator).cond, self._no_faces(), memory=self.blank_memory())

    def _no_faces(self) -> torch.Tensor:
        return torch.full((self.cfg.neighbours,), -1, dtype=torch.int64, device=self.family.device)


class RefineAdapted(GeneratorAdapted):
    """The decoder in one style, with the support's nearest faces: pairs in, pairs out."""

    def __init__(self, learner: RetrieveRefine, cond: torch.Tensor, faces: torch.Tensor,
                 candidates: torch.Tensor | None = None, memory: torch.Tensor | None = None) -> None:
        super().__init__(learner.generator, cond=cond, memory=memory)
        self.learner, self.faces, self.candidates = learner, faces, candidates
        self._ranking: torch.Tensor | None = None

    def sample(self, n: int, generator: torch.Generator | None = None, content: torch.Tensor | None = None,
               **options: Any) -> torch.Tensor:
        """Glyph pairs [n, 2, H, W] for reference glyphs `content` [n, 1, H, W]."""
        if content is None:
            raise DataError("the font generator draws given characters: pass content= reference glyphs [n, 1, H, W]")
        if content.dim() == 3:
            content = content[:, None]
        if content.dim() != 4 or content.shape[1] != 1:
            raise DataError(f"content must be reference glyphs [n, 1, H, W], got {list(content.shape)}")
        full = self.learner.content(content[:, 0], self.faces)
        x = super().sample(n, generator=generator, content=full, **options)[:, :2]
        if self.candidates is not None:
            x[:, 0] = self.select(full, x[:, 0])
        return x

    def candidate_log_probs(self, options: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """log p(candidate glyph | content, style) for options [n, M, H, W] and content [n, 1 + m, H, W], [n, M]."""
        return call(self.generator, self.params, "candidate_log_prob", options, full, self.cond, self.memory)

    @torch.no_grad()
    def face_ranking(self) -> torch.Tensor:
        """Candidate columns [M] ordered by the mean log-likelihood of their glyphs of every character all
        candidates draw (in the bank), likeliest first; computed once per adapted model."""
        if self._ranking is None:
            assert self.candidates is not None
            learner, cands = self.learner, self.candidates
            ok = cands >= 0  # [M]; -1: fewer bank faces draw the support's characters than asked for
            shared = learner.has_glyph[cands[ok]].all(0)  # [G]
            score = torch.full((len(cands),), -torch.inf, device=cands.device)
            if shared.any():
                refs = learner.class_refs[shared].float()  # [S, H, W]
                options = learner.retrieved(refs, cands)  # [S, M, H, W]
                lp = self.candidate_log_probs(options, learner.content(refs, self.faces))  # [S, M]
                score = torch.where(ok, lp.mean(0), score)
            else:  # nothing to compare on: the nearest first
                score[ok] = -torch.arange(int(ok.sum()), dtype=score.dtype, device=score.device)
            self._ranking = score.argsort(descending=True, stable=True)
        return self._ranking

    def select(self, full: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """For content [n, 1 + m, H, W], the candidate faces' glyph of each character that the decoder finds
        most likely, [n, H, W]; `drawn` where no candidate face has the character."""
        assert self.candidates is not None
        options, real = self.learner.retrieved_where(full[:, 0], self.candidates)  # [n, M, H, W], [n, M]
        n, M = options.shape[:2]
        if self.learner.cfg.select_by == "face":  # score: minus the rank of the candidate's face
            rank = torch.empty(M, device=options.device)
            rank[self.face_ranking()] = torch.arange(M, dtype=rank.dtype, device=rank.device)
            lp = -rank[None].expand(n, M)
        else:
            lp = self.candidate_log_probs(options, full)
        lp = torch.where(real, lp, torch.full_like(lp, -torch.inf))
        best = lp.argmax(1)
        chosen = options[torch.arange(n), best]
        return torch.where(real.any(1)[:, None, None], chosen, drawn)

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return super().log_prob(self.learner.augment(x, self.faces), iw_samples, generator)

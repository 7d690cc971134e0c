"""`metagen bench --preset fonts`: few-shot font generation on held-out typefaces, every method, every metric.

For each held-out typeface (a family never seen in training), its seen characters are split once, by the
preset's seed, into half A and half B. Support glyphs come from A (nested: the 1-shot support is the first
glyph of the 4-shot one); every method then draws the face's B characters (seen content) and the characters
no training typeface shows (`data.held_out_chars`, unseen content), which are scored against the true
glyphs:

- l1: mean absolute pixel difference (generated pixel probabilities against the binary glyph);
- ssim: structural similarity (Gaussian window 7, sigma 1.5, data range 1);
- perceptual: Euclidean distance between generated and true glyph in the features of metagen's own
  character classifier (a conv4 trained on the background typefaces' glyphs; no downloaded weights);
- fid: Fréchet distance in the same features, pooled over tasks, with a jackknife CI over tasks;
- content: share of generated glyphs that the character classifier reads as the intended character
  (characters drawn alike in the reference face, Latin A and Cyrillic А, count as one class);
- style: share that a typeface classifier, trained on the held-out typefaces' A glyphs only, assigns to
  the support's typeface.

Baselines: `copy reference` (draw the reference face's glyph) and `retrieval` (the background typeface
whose glyphs of the support characters are nearest in L1, drawn in full; characters it lacks, such as the
unseen-content ones no background face shows, fall back to the reference glyph). Two ceilings, which see
the answer and are no methods: `true glyphs` (the real targets, scored by the two classifiers and paired with
retrieval), `oracle: nearest face to the truth` (the background typeface nearest in L1 to the true targets,
drawn like retrieval's face: the best any method that draws one training face can score) and `oracle: nearest
training glyph to the truth` (per target, the nearest glyph of its character in any background face).
Per-task metrics get a 95% CI across tasks.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError
from safetensors.torch import load_file, save_file

from metagen.bench import BenchMethod, Shots, method_config, train_or_reuse
from metagen.checkpoint import atomic_write, atomic_write_text
from metagen.config import Config, Strict
from metagen.data import Splits, load_splits
from metagen.data.fonts import FontData
from metagen.data.glyphs import cache_dir
from metagen.errors import ConfigError, DataError
from metagen.evaluate import adapt_overrides, with_adapt_settings
from metagen.meta.base import MetaLearner
from metagen.metrics.features import FeatureNet, fit_classifier
from metagen.metrics.quality import fid
from metagen.metrics.stats import mean_ci

FONT_FEATURES_VERSION = 1
METRICS = ("l1", "ssim", "perceptual", "content", "style")
TRUE_GLYPHS = "true glyphs"  # the real targets: a ceiling row


class FontBenchPreset(Strict):
    kind: Literal["fonts"]
    description: str = ""
    shots: Shots = Field(default_factory=lambda: [1, 4, 8])
    episodes: int = Field(1, ge=1)  # support draws per held-out typeface
    max_faces: int | None = Field(None, ge=2)  # None: every held-out typeface
    # seen-character targets per held-out typeface, drawn by the seed from its B half (None: the whole half);
    # for the CJK track, whose faces have thousands of characters
    max_targets: int | None = Field(None, ge=1)
    seed: int = 0
    classifier_steps: int = Field(1500, ge=1)  # the character classifier (features) and the typeface classifier
    fid_intervals: bool = True  # FID's 95% intervals, by a jackknife over tasks (one FID per task and method)
    sheet_faces: int = Field(4, ge=0)  # sample sheets written for this many held-out typefaces
    sheet_chars: int = Field(24, ge=1)  # target characters per sheet row
    # Score the learned methods' most likely glyph (pixel probability > 0.5, binary like the data) instead
    # of their pixel probabilities (the mean glyph, soft where the model is unsure).
    binarize: bool = False
    methods: dict[str, BenchMethod] = Field(default_factory=dict)  # learners; the baselines are always added



def load_font_preset(raw: dict[str, Any], name: str) -> FontBenchPreset:
    if "bootstrap" in raw:
        raise ConfigError(f"bad bench preset ({name}): 'bootstrap' is gone from fonts presets (FID intervals now "
                          "come from a jackknife over tasks); remove it, or set fid_intervals = false to skip them")
    try:
        return FontBenchPreset.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"bad bench preset ({name}): {loc}: {err['msg']}") from None


# -- tasks -------------------------------------------------------------------------------------------------
@dataclass
class FontTask:
    face: int  # index into splits.held_out
    support: list[int]  # example indices (into the face's examples), max shots of them, nested
    seen: list[int]  # targets: B characters
    unseen: list[int]  # targets: held-out characters


def font_tasks(splits: Splits, p: FontBenchPreset) -> tuple[list[FontTask], dict[int, list[int]]]:
    """Tasks over the held-out typefaces and each face's A half (the typeface classifier's training glyphs)."""
    chars = _face_chars(splits)
    rng = np.random.default_rng(p.seed)
    faces = list(range(len(splits.held_out)))
    if p.max_faces is not None and p.max_faces < len(faces):
        faces = sorted(rng.choice(faces, size=p.max_faces, replace=False).tolist())
    tasks, half_a = [], {}
    k = max(p.shots)
    for f in faces:
        cs = chars[splits.held_out.names[f]]
        seen = [i for i, c in enumerate(cs) if c not in splits.held_out_chars]
        unseen = [i for i, c in enumerate(cs) if c in splits.held_out_chars]
        order = rng.permutation(seen).tolist()
        a, b = sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])
        if p.max_targets is not None and p.max_targets < len(b):
            pick = np.random.default_rng([p.seed, f])  # its own stream: the supports do not move
            b = sorted(pick.choice(b, size=p.max_targets, replace=False).tolist())
        if len(a) < k:
            raise DataError(f"typeface '{splits.held_out.names[f]}' has {len(seen)} characters, too few for "
                            f"{k} shots; lower the preset's shots")
        half_a[f] = a
        for _ in range(p.episodes):
            tasks.append(FontTask(f, rng.permutation(a)[:k].tolist(), b, unseen))
    return tasks, half_a


def _fonts(splits: Splits) -> FontData:
    if splits.fonts is None:
        raise DataError("the fonts bench needs data.source = 'fonts'")
    return splits.fonts


def _face_chars(splits: Splits) -> dict[str, str]:
    fonts = _fonts(splits)
    return dict(zip(fonts.concepts.names, fonts.chars, strict=True))


# -- methods -----------------------------------------------------------------------------------------------
class Method:
    """Draws target glyphs [N, H, W] in [0, 1] for a task, from its support pairs [K, 2, H, W]."""

    name: str

    def draw(self, support: torch.Tensor, support_chars: str, refs: torch.Tensor, chars: str) -> torch.Tensor:
        raise NotImplementedError


class CopyReference(Method):
    name = "copy reference"

    def draw(self, support: torch.Tensor, support_chars: str, refs: torch.Tensor, chars: str) -> torch.Tensor:
        return refs.float()


class Retrieval(Method):
    """The background typeface nearest to the support glyphs (mean L1 over the support's characters)."""

    name = "retrieval"

    def __init__(self, splits: Splits) -> None:
        """Every background typeface's glyphs, {char: [H, W]}, less the characters no training face shows."""
        fonts = _fonts(splits)
        self.held_out_chars = splits.held_out_chars
        index = {n: i for i, n in enumerate(fonts.concepts.names)}
        self.faces = []
        for name in splits.background.names:
            i = index[name]
            self.faces.append({c: g for c, g in zip(fonts.chars[i], fonts.concepts.examples[i][:, 0], strict=True)
                               if c not in splits.held_out_chars})

    def nearest(self, support: torch.Tensor, support_chars: str) -> int:
        best, best_d = 0, math.inf
        for i, glyphs in enumerate(self.faces):
            if not all(c in glyphs for c in support_chars):
                continue
            theirs = torch.stack([glyphs[c] for c in support_chars]).float()
            d = (theirs - support[:, 0].float()).abs().mean().item()
            if d < best_d:
                best, best_d = i, d
        return best

    def draw(self, support: torch.Tensor, support_chars: str, refs: torch.Tensor, chars: str) -> torch.Tensor:
        return self.draw_face(self.nearest(support, support_chars), refs, chars)

    def draw_face(self, face: int, refs: torch.Tensor, chars: str) -> torch.Tensor:
        """Background face `face`'s glyphs of chars [N, H, W]; the reference glyph refs[i] where it lacks one."""
        glyphs = self.faces[face]
        return torch.stack([glyphs[c].float() if c in glyphs else refs[i].float() for i, c in enumerate(chars)])


class Oracle(Retrieval):
    """A ceiling, not a method: it draws the targets from the background faces knowing their true glyphs."""

    def draw_truth(self, true: torch.Tensor, refs: torch.Tensor, chars: str) -> torch.Tensor:
        """Targets' true glyphs [N, H, W] and reference glyphs [N, H, W] -> drawn glyphs [N, H, W]."""
        raise NotImplementedError


class NearestToTruth(Oracle):
    """The background typeface nearest in L1 to the true glyphs of the targets that training faces draw, drawn
    as retrieval draws its face."""

    name = "oracle: nearest face to the truth"

    def __init__(self, splits: Splits) -> None:
        super().__init__(splits)
        self._seen: dict[bytes, int] = {}  # the same targets at every k: one search

    def draw_truth(self, true: torch.Tensor, refs: torch.Tensor, chars: str) -> torch.Tensor:
        shown = [i for i, c in enumerate(chars) if c not in self.held_out_chars]
        key = chars.encode() + true.to(torch.uint8).numpy().tobytes()
        if key not in self._seen:
            pairs = true[shown, None]  # [N', 1, H, W]: nearest() reads channel 0
            self._seen[key] = self.nearest(pairs, "".join(chars[i] for i in shown)) if shown else 0
        return self.draw_face(self._seen[key], refs, chars)


class NearestGlyphsToTruth(Oracle):
    """For each target, the background glyph of its character nearest in L1 to the true glyph, from whichever
    training face draws it (the best any per-character choice of real glyphs, such as retrieve and refine's
    selection, can score)."""

    name = "oracle: nearest training glyph to the truth"

    def __init__(self, splits: Splits) -> None:
        super().__init__(splits)
        self._options: dict[str, torch.Tensor] = {}  # char -> every background face's glyph of it [F_c, H, W]

    def draw_truth(self, true: torch.Tensor, refs: torch.Tensor, chars: str) -> torch.Tensor:
        out = refs.float().clone()
        for i, c in enumerate(chars):
            if c in self.held_out_chars:
                continue
            if c not in self._options:
                self._options[c] = torch.stack([g[c] for g in self.faces if c in g]).float()
            options = self._options[c]
            out[i] = options[(options - true[i].float()).abs().flatten(1).sum(1).argmin()]
        return out


class Learned(Method):
    def __init__(self, name: str, learner: MetaLearner, binarize: bool = False) -> None:
        self.name, self.learner, self.binarize = name, learner, binarize

    @torch.no_grad()
    def _sample(self, adapted: Any, refs: torch.Tensor) -> torch.Tensor:
        return adapted.sample(len(refs), content=refs[:, None].float())[:, 0]

    def draw(self, support: torch.Tensor, support_chars: str, refs: torch.Tensor, chars: str) -> torch.Tensor:
        with torch.enable_grad():  # gradient learners take their inner steps here
            adapted = self.learner.adapt(support.float())
        p = self._sample(adapted, refs).clamp(0, 1)
        return (p > 0.5).float() if self.binarize else p


# -- classifiers and metrics -------------------------------------------------------------------------------
def content_classes(fonts: FontData) -> dict[str, int]:
    """Character -> class: characters the reference face draws alike share a class."""
    ref = fonts.reference.reshape(len(fonts.charset), -1).float()  # [C, H*W] in {0, 1}
    on = ref.sum(1)
    differing = on[:, None] + on[None, :] - 2 * ref @ ref.T  # [C, C]: pixels where two glyphs differ
    alike = differing < 0.01 * ref.shape[1]
    classes: dict[str, int] = {}
    firsts: list[int] = []  # the first character of each class, in class order
    for i, c in enumerate(fonts.charset):
        same = alike[i, firsts].nonzero() if firsts else []
        if len(same):
            classes[c] = int(same[0])
        else:
            classes[c] = len(firsts)
            firsts.append(i)
    return classes


def character_classifier(splits: Splits, config: Config, steps: int, progress: bool) -> FeatureNet:
    """conv4 character classifier of the background typefaces' glyphs (every character), cached."""
    fonts = _fonts(splits)
    classes = content_classes(fonts)
    chars = _face_chars(splits)
    payload = {"v": FONT_FEATURES_VERSION, "names": splits.background.names, "size": config.data.image_size,
               "charset": fonts.charset, "steps": steps}
    key = hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]
    path = cache_dir() / "features" / f"fonts-{key}.safetensors"
    n = max(classes.values()) + 1
    net = FeatureNet(n, 64, 1)
    if _load_cached(path, net) is not None:
        return net.eval()
    index = {nm: i for i, nm in enumerate(fonts.concepts.names)}
    xs, ys = [], []
    for nm in splits.background.names:
        e = fonts.concepts.examples[index[nm]]
        xs.append(e[:, :1])
        ys.append(torch.tensor([classes[c] for c in chars[nm]]))
    torch.manual_seed(0)
    fit_classifier(net, torch.cat(xs), torch.cat(ys), steps, 2e-3, 128, 1, 0, "character classifier", progress)
    _save_cached(path, net)
    return net.eval()


def typeface_classifier(splits: Splits, half_a: dict[int, list[int]], steps: int, progress: bool,
                        seed: int) -> tuple[FeatureNet, dict[int, int], float]:
    """conv4 classifier of the held-out typefaces, trained on their A glyphs; (net, face -> class, its
    training accuracy). Cached by the faces, their A glyphs, the steps and the seed."""
    faces = sorted(half_a)
    label = {f: i for i, f in enumerate(faces)}
    names = splits.held_out.names
    payload = {"v": FONT_FEATURES_VERSION, "faces": [names[f] for f in faces], "a": [half_a[f] for f in faces],
               "n": [len(splits.held_out.examples[f]) for f in faces],
               "size": list(splits.held_out.examples[faces[0]].shape[-2:]), "steps": steps, "seed": seed,
               "init": "seeded"}
    key = hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]
    path = cache_dir() / "features" / f"typefaces-{key}.safetensors"
    torch.manual_seed(seed)  # the initial weights (the cache's own key when trained)
    net = FeatureNet(len(faces), 64, 1)
    extra = _load_cached(path, net)
    if extra is not None and "train_accuracy" in extra:
        return net.eval(), label, float(extra["train_accuracy"].item())
    xs = torch.cat([splits.held_out.examples[f][half_a[f], :1] for f in faces])
    ys = torch.cat([torch.full((len(half_a[f]),), label[f]) for f in faces])
    acc = fit_classifier(net, xs, ys, steps, 2e-3, 128, 1, seed, "typeface classifier", progress)
    _save_cached(path, net, train_accuracy=torch.tensor(acc, dtype=torch.float64))
    return net.eval(), label, acc


def _load_cached(path: Path, net: FeatureNet) -> dict[str, torch.Tensor] | None:
    """Load a cached classifier's weights into `net`: the file's other tensors, or None where there is no
    readable file for this net (then it is trained)."""
    if not path.is_file():
        return None
    try:
        state = load_file(str(path))
        own = net.state_dict().keys()
        net.load_state_dict({k: v for k, v in state.items() if k in own})
    except (OSError, RuntimeError, ValueError):
        return None
    return {k: v for k, v in state.items() if k not in own}


def _save_cached(path: Path, net: FeatureNet, **extra: torch.Tensor) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()} | extra
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of x, y [N, H, W] in [0, 1] (Gaussian window 7, sigma 1.5), [N]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(x[:, None].float(), y[:, None].float(), data_range=1.0,
                                               kernel_size=7, sigma=1.5, reduction="none")


@torch.no_grad()
def score(gen: torch.Tensor, true: torch.Tensor, labels: torch.Tensor, face_label: int, chars_net: FeatureNet,
          style_net: FeatureNet) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Per-task metrics of generated glyphs gen [N, H, W] against true [N, H, W]; also both feature sets."""
    fg, ft = chars_net.embed(gen[:, None].float()), chars_net.embed(true[:, None].float())
    out = {
        "l1": (gen.float() - true.float()).abs().mean().item(),
        "ssim": ssim(gen, true).mean().item(),
        "perceptual": (fg - ft).norm(dim=1).mean().item(),
        "content": (chars_net(gen[:, None].float()).argmax(1) == labels).float().mean().item(),
        "style": (style_net(gen[:, None].float()).argmax(1) == face_label).float().mean().item(),
    }
    return out, fg, ft


def fid_tasks(real: list[torch.Tensor], fake: list[torch.Tensor], intervals: bool = True) -> tuple[float, float]:
    """FID of pooled features and the half-width of its 95% interval (jackknife over whole tasks)."""
    value = fid(torch.cat(real), torch.cat(fake))
    if not intervals or len(real) < 2 or math.isnan(value):
        return value, 0.0
    return value, task_jackknife(len(real), lambda idx: fid(torch.cat([real[i] for i in idx]),
                                                            torch.cat([fake[i] for i in idx])))


def task_jackknife(n: int, statistic: Callable[[list[int]], float]) -> float:
    """Half-width of the 95% normal interval of statistic(all n tasks), its standard error by the delete-one-task
    jackknife. A bootstrap would repeat tasks, and FIDs of sets with repeats sit off the estimate: percentile
    intervals of FID differences were seen to miss the estimate itself."""
    values = torch.tensor([statistic([j for j in range(n) if j != i]) for i in range(n)], dtype=torch.float64)
    return 1.96 * math.sqrt((n - 1) / n * float(((values - values.mean()) ** 2).sum()))


def fid_difference(real: list[torch.Tensor], fake: list[torch.Tensor], base: list[torch.Tensor],
                   intervals: bool = True) -> dict[str, float]:
    """FID(fake) - FID(base) against the same real features, its interval paired (both FIDs on the same tasks
    left out): {mean (the difference on all tasks), lo, hi (its 95% interval), ci95 (half its width)}."""
    value = fid(torch.cat(real), torch.cat(fake)) - fid(torch.cat(real), torch.cat(base))
    if not intervals or len(real) < 2 or math.isnan(value):
        return {"mean": value, "ci95": 0.0, "lo": value, "hi": value}
    def difference(idx: list[int]) -> float:
        r = torch.cat([real[i] for i in idx])
        return fid(r, torch.cat([fake[i] for i in idx])) - fid(r, torch.cat([base[i] for i in idx]))

    h = task_jackknife(len(real), difference)
    return {"mean": value, "ci95": h, "lo": value - h, "hi": value + h}


# -- the bench ---------------------------------------------------------------------------------------------
def run_font_bench(name: str, raw: dict[str, Any], out_dir: str | Path, runs_dir: str | Path = "runs/bench",
                   *, methods: list[str] | None = None, data_dir: str | None = None, device: str = "cpu",
                   progress: bool = True, quiet: bool = False) -> dict[str, Any]:
    """Run the fonts bench preset `raw`; writes report.json, report.md and sample sheets under `out_dir`."""
    p = load_font_preset(raw, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = methods or list(p.methods)
    unknown = sorted(set(chosen) - set(p.methods) - {CopyReference.name, Retrieval.name})
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; the preset has: {', '.join(p.methods)}")
    dev = torch.device(device)
    learned: list[Method] = []
    config: Config | None = None
    done: dict[str, MetaLearner] = {}  # methods that differ only in adaptation settings share one training run
    for m in [m for m in chosen if m in p.methods]:
        cfg = method_config(p.methods[m], p.seed, device)
        if cfg.data.source != "fonts":
            raise ConfigError(f"method '{m}' is trained on {cfg.data.source}; the fonts bench needs fonts runs")
        if config is not None and (cfg.data, cfg.split) != (config.data, config.split):
            raise ConfigError(f"method '{m}' uses other data or split settings than the first method; every "
                              "method of the fonts bench must share them")
        config = config or cfg
        key = p.methods[m].model_dump_json(exclude={"adapt", "classify"})
        if key not in done:
            done[key] = train_or_reuse(cfg, Path(runs_dir) / f"{name}-{_slug(m)}", data_dir, dev, progress,
                                       p.methods[m].checkpoint).learner.cpu().eval()
        learner = copy.deepcopy(done[key])
        with_adapt_settings(learner, adapt_overrides(p.methods[m].adapt))
        learned.append(Learned(m, learner, p.binarize))
    if config is None:  # only the baselines: the data of the preset's methods (the CJK track's too)
        from metagen.config import load_config

        first = next(iter(p.methods.values()), None)
        config = method_config(first, p.seed, device) if first is not None else load_config("fonts")
    splits = load_splits(config.data, config.split, data_dir)
    all_methods: list[Method] = [CopyReference(), Retrieval(splits), NearestToTruth(splits),
                                 NearestGlyphsToTruth(splits), *learned]
    tasks, half_a = font_tasks(splits, p)
    chars_net = character_classifier(splits, config, p.classifier_steps, progress)
    style_net, face_label, style_train_acc = typeface_classifier(splits, half_a, p.classifier_steps, progress, p.seed)
    classes = content_classes(_fonts(splits))
    chars_of = _face_chars(splits)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "preset": name, "shots": p.shots, "tasks": len(tasks), "held_out_faces": len(half_a),
        "held_out_families": splits.test_groups, "held_out_chars": splits.held_out_chars,
        "image_size": config.data.image_size, "typeface_classifier_train_accuracy": style_train_acc,
        "methods": {}, "true": {},
    }
    sheets: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for split_name in ["seen", "unseen"] if splits.held_out_chars else ["seen"]:
        # the true glyphs, scored by the classifiers
        per: dict[str, list[float]] = {"content": [], "style": []}
        for t in tasks:
            ex = splits.held_out.examples[t.face]
            ids = getattr(t, split_name)
            labels = torch.tensor([classes[chars_of[splits.held_out.names[t.face]][i]] for i in ids])
            true = ex[ids, 0]
            s, _, _ = score(true.float(), true, labels, face_label[t.face], chars_net, style_net)
            per["content"].append(s["content"])
            per["style"].append(s["style"])
        report["true"][split_name] = {k: dict(zip(("mean", "ci95"), mean_ci(v), strict=True)) for k, v in per.items()}
        report["true"][split_name]["per_task"] = per
    split_names = ["seen", "unseen"] if splits.held_out_chars else ["seen"]
    first: dict[int, int] = {}  # a face's first task
    for ti, t in enumerate(tasks):
        first.setdefault(t.face, ti)
    sheet_tasks = set(list(first.values())[: p.sheet_faces])
    features: dict[tuple[str, str, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}  # for paired FIDs
    for method in all_methods:
        scored = ["seen"] if isinstance(method, Oracle) else split_names  # oracles: no unseen glyphs
        rows: dict[str, Any] = {name: {} for name in scored}
        for k in p.shots:
            per = {name: {m: [] for m in METRICS} for name in scored}
            feats: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {n: ([], []) for n in scored}
            seconds = 0.0
            for ti, t in enumerate(tasks):
                ex, cs = splits.held_out.examples[t.face], chars_of[splits.held_out.names[t.face]]
                ids = t.seen + t.unseen  # one adaptation per task and k draws both kinds of target
                s0 = time.perf_counter()
                if isinstance(method, Oracle):
                    gen = method.draw_truth(ex[ids, 0], ex[ids, 1], "".join(cs[i] for i in ids))
                else:
                    gen = method.draw(ex[t.support[:k]], "".join(cs[i] for i in t.support[:k]), ex[ids, 1],
                                      "".join(cs[i] for i in ids))
                seconds += time.perf_counter() - s0
                parts = {"seen": (gen[: len(t.seen)], t.seen), "unseen": (gen[len(t.seen) :], t.unseen)}
                for name in scored:
                    g, part = parts[name]
                    labels = torch.tensor([classes[cs[i]] for i in part])
                    sc, fg, ft = score(g, ex[part, 0], labels, face_label[t.face], chars_net, style_net)
                    for m in METRICS:
                        per[name][m].append(sc[m])
                    feats[name][0].append(ft)
                    feats[name][1].append(fg)
                if k == max(p.shots) and ti in sheet_tasks:
                    sheets.setdefault(ti, []).append((method.name, gen[: p.sheet_chars]))
            for name in scored:
                cell: dict[str, Any] = {m: dict(zip(("mean", "ci95"), mean_ci(v), strict=True))
                                        for m, v in per[name].items()}
                cell["per_task"] = per[name]  # same tasks for every method: paired comparisons
                features[method.name, name, k] = feats[name]
                f, ci = fid_tasks(*feats[name], p.fid_intervals)
                cell["fid"] = {"mean": f, "ci95": ci}
                cell["ms_per_task"] = 1000 * seconds / max(len(tasks), 1)
                rows[name][str(k)] = cell
                if not quiet:
                    print(f"{method.name:>24} {name:>6} k={k}: l1 {cell['l1']['mean']:.3f} "
                          f"ssim {cell['ssim']['mean']:.3f} content {cell['content']['mean']:.2f} "
                          f"style {cell['style']['mean']:.2f} fid {f:.1f}", flush=True)
        report["methods"][method.name] = rows
    report["vs_retrieval"] = paired_differences(report["methods"], report["true"])
    for m, by_split in report["vs_retrieval"].items():
        if m == TRUE_GLYPHS:  # scored by the classifiers only
            continue
        for split_name, by_k in by_split.items():
            for k, d in by_k.items():
                real, fake = features[m, split_name, int(k)]
                d["fid"] = fid_difference(real, fake, features[Retrieval.name, split_name, int(k)][1],
                                          p.fid_intervals)
    report["seconds"] = time.perf_counter() - t0
    report["sheets"] = write_sheets(out, splits, tasks, sheets, p)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    md = markdown_report(report)
    atomic_write_text(out / "report.md", md)
    if not quiet:
        print(md)
    return report


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def write_sheets(out: Path, splits: Splits, tasks: list[FontTask], sheets: dict[int, list[tuple[str, torch.Tensor]]],
                 p: FontBenchPreset) -> list[str]:
    """One PNG per sheet task: row 1 the support, then one row per method, last the true glyphs."""
    from PIL import Image

    paths = []
    k = max(p.shots)
    for ti, rows in sheets.items():
        t = tasks[ti]
        ex = splits.held_out.examples[t.face]
        true = ex[t.seen[: p.sheet_chars], 0].float()
        support = ex[t.support[:k], 0].float()
        grid = [support, *[g for _, g in rows], true]
        H = ex.shape[-1]
        width = max(len(g) for g in grid)
        canvas = np.ones((len(grid) * (H + 2), width * H), np.float32)
        for r, g in enumerate(grid):
            for c, img in enumerate(g):
                canvas[r * (H + 2) : r * (H + 2) + H, c * H : (c + 1) * H] = 1 - img.numpy()
        path = out / f"sheet_{_slug(splits.held_out.names[t.face])}.png"
        Image.fromarray((canvas * 255).astype(np.uint8)).resize((canvas.shape[1] * 2, canvas.shape[0] * 2),
                                                                Image.Resampling.NEAREST).save(path)
        atomic_write_text(path.with_suffix(".txt"), "rows: support | " + " | ".join(n for n, _ in rows) +
                          " | true glyphs\n")
        paths.append(path.name)
    return paths


def paired_differences(methods: dict[str, Any], true: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per method but the baselines, split and k: method - retrieval on each task's metrics, as mean and 95% CI
    (the tasks are the same, so the pairing removes the spread between typefaces); with `true` (the report's
    true-glyph scores), also the true glyphs - retrieval on content and style."""
    base = methods.get(Retrieval.name)
    out: dict[str, Any] = {}
    if base is None:
        return out
    def paired(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        return {m: dict(zip(("mean", "ci95"), mean_ci([a - b for a, b in zip(ours[m], theirs[m], strict=True)]),
                            strict=True)) for m in ours}

    for split_name, scores in (true or {}).items():
        if "per_task" not in scores:
            continue
        for k, cell in base[split_name].items():  # the classifiers' metrics only
            out.setdefault(TRUE_GLYPHS, {}).setdefault(split_name, {})[k] = paired(scores["per_task"],
                                                                                   cell["per_task"])
    for name, rows in methods.items():
        if name in (Retrieval.name, CopyReference.name):
            continue
        for split_name, by_k in rows.items():
            for k, cell in by_k.items():
                out.setdefault(name, {}).setdefault(split_name, {})[k] = paired(cell["per_task"],
                                                                                base[split_name][k]["per_task"])
    return out


def _fmt(cell: dict[str, float], digits: int = 3) -> str:
    return f"{cell['mean']:.{digits}f} ± {cell['ci95']:.{digits}f}"


def markdown_report(report: dict[str, Any]) -> str:
    lines = [f"Held-out typefaces: {report['held_out_faces']} ({len(report['held_out_families'])} families), "
             f"{report['tasks']} tasks; mean ± 95% CI across tasks (FID: jackknife over tasks). "
             f"l1, perceptual, fid: lower is better; ssim, content, style: higher is better.", ""]
    for split_name in ("seen", "unseen"):
        if split_name not in report["true"]:
            continue
        title = ("Seen characters (the face's other glyphs)" if split_name == "seen" else
                 f"Unseen characters (never shown in training: {report['held_out_chars']})")
        lines += [f"**{title}**", "", "| method | k | l1 | ssim | perceptual | fid | content | style |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        tr = report["true"][split_name]
        lines.append(f"| true glyphs | – | 0 | 1 | 0 | 0 | {_fmt(tr['content'], 2)} | {_fmt(tr['style'], 2)} |")
        for m, rows in report["methods"].items():
            for k, c in rows.get(split_name, {}).items():
                lines.append(f"| {m} | {k} | {_fmt(c['l1'])} | {_fmt(c['ssim'])} | {_fmt(c['perceptual'], 2)} | "
                             f"{c['fid']['mean']:.1f} ± {c['fid']['ci95']:.1f} | {_fmt(c['content'], 2)} | "
                             f"{_fmt(c['style'], 2)} |")
        lines.append("")
    if report.get("vs_retrieval"):
        lines += ["**Paired against retrieval** (method − retrieval on the same tasks, mean ± 95% CI; * where the "
                  "interval excludes 0; FID: paired jackknife over tasks)", "",
                  "| method | split | k | l1 | ssim | perceptual | fid | content | style |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for m, splits in report["vs_retrieval"].items():
            for split_name, by_k in splits.items():
                for k, d in by_k.items():
                    cells = [_fmt_signed(d[x], 2 if x in ("perceptual", "fid") else 3) if x in d else "–"
                             for x in ("l1", "ssim", "perceptual", "fid", "content", "style")]
                    lines.append(f"| {m} | {split_name} | {k} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt_signed(cell: dict[str, float], digits: int) -> str:
    excludes_zero = cell["lo"] > 0 or cell["hi"] < 0 if "lo" in cell else abs(cell["mean"]) > cell["ci95"]
    star = "*" if excludes_zero else ""
    return f"{cell['mean']:+.{digits}f} ± {cell['ci95']:.{digits}f}{star}"

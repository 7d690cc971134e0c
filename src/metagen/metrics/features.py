"""The domain feature network behind every sample metric, and the held-out fidelity classifier.

No Inception weights exist for binary 28x28 strokes (and nothing may be downloaded), so metagen trains its
own: a conv4 classifier of the background concepts, with shifts, blur and lowered contrast as augmentation.
The blur matters: generators return soft images (a VAE's pixel probabilities), and a network trained on
binary images alone recognises 95% of held-out support images but 5% of the same images after a 3x3 box
blur, which would make every metric judge stroke softness instead of shape. Its penultimate features
(`embed`, [B, D]) feed FID, precision/recall, novelty and diversity. It is cached under
`$METAGEN_CACHE_DIR/features/` by a hash of everything it was trained from (data, split, held-out groups,
its own settings), so every benchmark run on one split measures with the same network.

The fidelity classifier starts from the feature network and is fine-tuned to tell the held-out concepts
apart, using only held-out examples that no support set contains (the evaluation tasks' queries).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from metagen.checkpoint import atomic_write, atomic_write_text
from metagen.config import Config, DataConfig, Strict
from metagen.data.concepts import ConceptSet
from metagen.data.episodes import Tasks
from metagen.data.glyphs import cache_dir
from metagen.errors import DataError

FEATURES_VERSION = 2  # bump when the architecture or training changes, so old caches are not reused
FIDELITY_VERSION = 2  # the same for the fidelity classifier (2: its new head is initialised from `seed`)


class FeatureConfig(Strict):
    channels: int = Field(64, ge=4)  # feature dimension D
    steps: int = Field(1500, ge=1)
    batch: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    val_examples: int = Field(2, ge=0)  # examples per background concept kept out to measure its accuracy
    shift: int = Field(2, ge=0)  # random translation augmentation, in pixels
    seed: int = 0


class FeatureNet(nn.Module):
    """conv4 classifier: 4 x [conv3x3, BN, ReLU, maxpool2], global average pool -> features [B, D] -> logits."""

    def __init__(self, n_classes: int, channels: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for _ in range(4):
            layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c_in = channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, n_classes)
        self.num_features = channels  # read by torchmetrics' FID

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] in [0, 1] -> features [B, D]."""
        return self.body(x.float()).mean((-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Eval-mode features of any number of images [N, C, H, W] -> [N, D]."""
        was = self.training
        self.eval()
        out = torch.cat([self.embed(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else \
            torch.zeros(0, self.num_features, device=x.device)
        self.train(was)
        return out


def _shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero padding): x [B, C, H, W]."""
    if max_shift == 0:
        return x
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, B), generator=g)).tolist()
    return torch.stack([padded[b, :, dy[b] : dy[b] + H, dx[b] : dx[b] + W] for b in range(B)])


def _soften(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Half of the images [B, C, H, W] get a random amount of 3x3 blur and a random contrast in [0.5, 1], so
    soft renderings of a shape (a VAE's pixel probabilities) look like its binary ones to the network."""
    B, C = x.shape[:2]
    kernel = torch.full((C, 1, 3, 3), 1 / 9, device=x.device, dtype=x.dtype)
    blurred = F.conv2d(x, kernel, padding=1, groups=C)
    amount = torch.rand(B, 1, 1, 1, generator=g).to(x)  # 0: sharp, 1: fully blurred
    contrast = 0.5 + 0.5 * torch.rand(B, 1, 1, 1, generator=g).to(x)
    soft = contrast * (x + amount * (blurred - x))
    keep = (torch.rand(B, 1, 1, 1, generator=g) < 0.5).to(x.device)
    return torch.where(keep, x, soft)


def fit_classifier(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float, batch: int,
                   shift: int, seed: int, desc: str, progress: bool = True) -> float:
    """Adam on cross-entropy over random minibatches of (images [N, C, H, W], labels [N]); returns the last
    50 steps' mean training accuracy."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    correct: list[float] = []
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress, dynamic_ncols=True):
        idx = torch.randint(len(images), (min(batch, len(images)),), generator=g)
        x = _soften(_shift(images[idx].float(), shift, g), g).to(_device(net))
        y = labels[idx].to(_device(net))
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        correct = [*correct[-49:], (logits.argmax(1) == y).float().mean().item()]
    net.eval()
    return sum(correct) / len(correct)


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> float:
    net.eval()
    hits = sum((net(images[i : i + batch].to(_device(net))).argmax(1).cpu() == labels[i : i + batch]).sum().item()
               for i in range(0, len(images), batch))
    return hits / max(len(images), 1)


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@dataclass
class TrainedFeatures:
    net: FeatureNet
    path: Path  # the cached weights
    info: dict[str, Any]  # what it was trained on, its held-out accuracy, its training time


def feature_data(data: DataConfig) -> DataConfig:
    """The data settings the feature network is trained with: a method's mirrored training concepts
    (`data.mirrors`) do not change it, so the methods of one split are scored in one feature space."""
    return data.model_copy(update={"mirrors": False})


def features_key(config: Config, cfg: FeatureConfig) -> str:
    """Hash of everything the feature network depends on."""
    data = feature_data(config.data).model_dump(exclude={"data_dir", "mirrors"})
    payload = {"version": FEATURES_VERSION, "data": data, "split": config.split.model_dump(),
               "features": cfg.model_dump()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _labelled(concepts: ConceptSet, val_examples: int) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, val images, val labels): the last `val_examples` of each concept are val."""
    if len(concepts) < 2:
        raise DataError("the feature network needs at least 2 background concepts to classify")
    keep = min(val_examples, concepts.min_examples() - 1)
    xs, ys, vx, vy = [], [], [], []
    for c, ex in enumerate(concepts.examples):
        n = len(ex) - keep
        xs.append(ex[:n])
        vx.append(ex[n:])
        ys.append(torch.full((n,), c))
        vy.append(torch.full((len(ex) - n,), c))
    return torch.cat(xs), torch.cat(ys), torch.cat(vx), torch.cat(vy)


def feature_net(config: Config, background: ConceptSet, cfg: FeatureConfig | None = None,
                device: torch.device | str = "cpu", force: bool = False, progress: bool = True) -> TrainedFeatures:
    """The feature network for `config`'s split: read from the cache, or trained on `background` and cached."""
    cfg = cfg or FeatureConfig()
    key = features_key(config, cfg)
    folder = cache_dir() / "features"
    path, meta = folder / f"{key}.safetensors", folder / f"{key}.json"
    n_classes = len(background)
    net = FeatureNet(n_classes, cfg.channels, background.example_shape[0])
    if path.is_file() and meta.is_file() and not force:
        try:
            net.load_state_dict(load_file(str(path)))
            return TrainedFeatures(net.to(device).eval(), path, json.loads(meta.read_text()))
        except (OSError, RuntimeError, ValueError, json.JSONDecodeError):
            pass  # a damaged cache entry is retrained below
    torch.manual_seed(cfg.seed)
    net = FeatureNet(n_classes, cfg.channels, background.example_shape[0]).to(device)
    x, y, vx, vy = _labelled(background, cfg.val_examples)
    t0 = time.perf_counter()
    train_acc = fit_classifier(net, x, y, cfg.steps, cfg.lr, cfg.batch, cfg.shift, cfg.seed, "features",
                               progress)
    info = {"key": key, "classes": n_classes, "train_images": len(x), "train_accuracy": train_acc,
            "val_images": len(vx), "val_accuracy": accuracy(net, vx.float(), vy) if len(vx) else None,
            "seconds": time.perf_counter() - t0, "config": cfg.model_dump(), "data": config.data.source,
            "test_groups": list(config.split.test_groups) if isinstance(config.split.test_groups, list) else
            config.split.test_groups}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(meta, json.dumps(info, indent=2) + "\n")
    return TrainedFeatures(net.eval(), path, info)


class FidelityClassifier:
    """Which held-out concept an image shows: the feature network fine-tuned on the tasks' query examples.

    `trained_on` holds the (concept, example id) pairs it saw, so callers can check that no support example
    is among them; `support_accuracy` is its accuracy on the support examples, which it never saw."""

    def __init__(self, features: FeatureNet, tasks: Tasks, steps: int = 300, lr: float = 1e-3, shift: int = 2,
                 seed: int = 0, progress: bool = True) -> None:
        support = {(int(c), int(i)) for c, ids in zip(tasks.concepts, tasks.support_ids, strict=True) for i in ids}
        self.trained_on = {(int(c), int(i)) for c, ids in zip(tasks.concepts, tasks.query_ids, strict=True)
                           for i in ids}
        if support & self.trained_on:
            raise DataError("the fidelity classifier would train on support examples; queries and supports overlap")
        T, Q = tasks.query.shape[:2]
        self.net = copy.deepcopy(features)
        with torch.random.fork_rng(devices=[]):  # the same classifier whatever ran before it
            torch.manual_seed(seed)
            self.net.head = nn.Linear(features.num_features, T).to(_device(features))
        x = tasks.query.flatten(0, 1).cpu()  # [T*Q, C, H, W]
        y = torch.arange(T).repeat_interleave(Q)  # task index = concept label
        self.train_accuracy = fit_classifier(self.net, x, y, steps, lr, min(128, len(x)), shift, seed, "fidelity",
                                             progress)
        K = tasks.support.shape[1]
        self.support_accuracy = accuracy(self.net, tasks.support.flatten(0, 1).cpu(),
                                         torch.arange(T).repeat_interleave(K))

    @torch.no_grad()
    def recognised(self, x: torch.Tensor, task: int) -> float:
        """Fraction of images x [N, C, H, W] classified as task `task`'s concept."""
        self.net.eval()
        return (self.net(x.to(_device(self.net))).argmax(1) == task).float().mean().item()

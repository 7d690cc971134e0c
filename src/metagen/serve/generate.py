"""What a job does: read an uploaded support set, adapt the run's learner to it, sample, package the results."""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from metagen.data.images import load_image, preprocessing
from metagen.errors import DataError
from metagen.serve.jobs import Job
from metagen.serve.runs import SLOW_GENERATORS, RunInfo
from metagen.viz import adapt_grid, to_uint8


@dataclass
class Result:
    kind: str  # "image" or "text"
    samples: list[bytes | str] = field(default_factory=list)  # PNG bytes per image, or texts
    grid: bytes | None = None  # images: the support row, then the samples
    seconds: float = 0.0


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_support(uploads: list[tuple[str, bytes]], ckpt: Any) -> torch.Tensor:
    """Uploaded image files -> [K, 1, H, W], preprocessed as the run was trained; DataError names a bad file."""
    if not uploads:
        raise DataError("the support set is empty; add at least one example image")
    size, layout = preprocessing(ckpt)
    return torch.stack([load_image(data, size, layout, name=name) for name, data in uploads])


def text_support(texts: list[str], ckpt: Any) -> torch.Tensor:
    """Support texts -> token ids [K, L] in the run's vocabulary."""
    from metagen.data.text import encode_support

    data = ckpt.config.data
    return encode_support(texts, data.vocab, data.max_len)[0]


def _chunks(n: int, info: RunInfo) -> list[int]:
    """Slow families sample in about ten pieces, so progress can be shown; the rest in one go."""
    if info.generator not in SLOW_GENERATORS:
        return [n]
    size = max(1, math.ceil(n / 10))
    return [min(size, n - i) for i in range(0, n, size)]


def generate(job: Job, info: RunInfo, learner: Any, ckpt: Any, support: torch.Tensor, n: int, seed: int,
             temperature: float = 1.0) -> Result:
    """Adapt to `support`, draw `n` samples with a generator seeded by `seed`; updates the job's progress."""
    import time

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        job.stage = f"adapting to {len(support)} examples"
        adapted = learner.adapt(support)
        parts = []
        for size in _chunks(n, info):
            job.stage = f"sampling {job.done + 1}-{job.done + size} of {n}"
            options = {"temperature": temperature} if info.kind == "text" and temperature != 1.0 else {}
            parts.append(adapted.sample(size, generator=g, **options))
            job.done += size
    samples = torch.cat(parts)
    if info.kind == "text":
        from metagen.data.text import CharVocab

        texts = CharVocab(ckpt.config.data.vocab).decode(samples.cpu())
        return Result("text", list(texts), seconds=time.perf_counter() - t0)
    images = [png(Image.fromarray(to_uint8(x))) for x in samples]
    return Result("image", images, png(adapt_grid(support, samples)), time.perf_counter() - t0)


def zip_result(result: Result, run: str) -> bytes:
    """The samples as files: sample_000.png ... and grid.png, or sample_000.txt ...; a README.txt says what."""
    buf = io.BytesIO()
    width = max(3, len(str(len(result.samples))))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.txt", f"{len(result.samples)} samples of metagen run '{run}'.\n")
        for i, s in enumerate(result.samples):
            if isinstance(s, bytes):
                zf.writestr(f"sample_{i:0{width}d}.png", s)
            else:
                zf.writestr(f"sample_{i:0{width}d}.txt", s + "\n")
        if result.grid is not None:
            zf.writestr("grid.png", result.grid)
    return buf.getvalue()

"""What a job does: read an uploaded support set, adapt the run's learner to it, sample, package the results."""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from metagen.compose import to_abc
from metagen.data.images import load_image, preprocessing
from metagen.errors import DataError
from metagen.serve.jobs import Job
from metagen.serve.runs import SLOW_GENERATORS, RunInfo
from metagen.viz import adapt_grid, to_uint8


@dataclass
class Result:
    kind: str  # "image", "text" or "tunes"
    samples: list[bytes | str] = field(default_factory=list)  # PNG bytes per image, texts, or tunes in ABC
    midi: list[bytes] = field(default_factory=list)  # tunes: each sample as MIDI
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
            options = {"temperature": temperature} if info.kind != "image" and temperature != 1.0 else {}
            parts.append(adapted.sample(size, generator=g, **options))
            job.done += size
    samples = torch.cat(parts)
    if info.kind != "image":
        from metagen.data.text import CharVocab

        texts = CharVocab(ckpt.config.data.vocab).decode(samples.cpu())
        if info.kind == "tunes":
            return Result("tunes", [to_abc(t, i + 1, f"metagen sample {i + 1}") for i, t in enumerate(texts)],
                          midi=[midi_bytes(t) for t in texts], seconds=time.perf_counter() - t0)
        return Result("text", list(texts), seconds=time.perf_counter() - t0)
    images = [png(Image.fromarray(to_uint8(x))) for x in samples]
    return Result("image", images, grid=png(adapt_grid(support, samples)), seconds=time.perf_counter() - t0)


def tune_support(uploads: list[tuple[str, bytes]], abc_text: str, ckpt: Any) -> torch.Tensor:
    """Uploaded .abc/.mid/.musicxml files and pasted ABC -> token ids [K, L] of a tune model."""
    import tempfile
    from pathlib import Path

    from metagen.compose import SUFFIXES, support_tokens
    from metagen.data.text import CharVocab

    data = ckpt.config.data
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (name, content) in enumerate(uploads):
            suffix = Path(name).suffix.lower()
            if suffix not in SUFFIXES:
                raise DataError(f"'{name}' is not a tune file: give .abc, .mid/.midi or .musicxml/.xml/.mxl")
            paths.append(Path(tmp) / f"upload{i}{suffix}")  # our name: the upload's is only a label
            paths[-1].write_bytes(content)
        if abc_text.strip():
            paths.append(Path(tmp) / "pasted.abc")
            paths[-1].write_text(abc_text if abc_text.lstrip().startswith("X:") else "X:1\n" + abc_text)
        if not paths:
            raise DataError("the support set is empty; upload tune files or paste ABC")
        try:
            tokens = support_tokens([str(p) for p in paths], data.max_len, data.transpose)
        except DataError as e:  # name the upload, not the temporary file
            msg = str(e)
            for p, (name, _) in zip(paths, uploads, strict=False):
                msg = msg.replace(str(p), name)
            raise DataError(msg.replace(str(Path(tmp) / "pasted.abc"), "the pasted ABC")) from None
    return CharVocab(data.vocab).encode(tokens, data.max_len)


def midi_bytes(text: str) -> bytes:
    import tempfile
    from pathlib import Path

    from metagen.compose import write_midi

    with tempfile.TemporaryDirectory() as tmp:
        return write_midi(text, Path(tmp) / "x.mid").read_bytes()


def zip_result(result: Result, run: str) -> bytes:
    """The samples as files: sample_000.png ... and grid.png, or sample_000.txt ...; a README.txt says what."""
    buf = io.BytesIO()
    width = max(3, len(str(len(result.samples))))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.txt", f"{len(result.samples)} samples of metagen run '{run}'.\n")
        for i, s in enumerate(result.samples):
            if isinstance(s, bytes):
                zf.writestr(f"sample_{i:0{width}d}.png", s)
            elif result.kind == "tunes":
                zf.writestr(f"sample_{i:0{width}d}.abc", s)
                zf.writestr(f"sample_{i:0{width}d}.mid", result.midi[i])
            else:
                zf.writestr(f"sample_{i:0{width}d}.txt", s + "\n")
        if result.grid is not None:
            zf.writestr("grid.png", result.grid)
    return buf.getvalue()

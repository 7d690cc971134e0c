"""Music-aware measures of sampled tunes (token strings of metagen.data.tunes) against a style's real tunes.

- histograms: pitch class (12), melodic interval in semitones clipped to +-12 (25), duration (17 classes);
  `histogram_distance` is the total variation distance (0 = same, 1 = disjoint) between two sets' histograms;
- `metre_consistency`: the share of complete bars (not the first or last) whose durations add up to the
  bar length of the tune's metre;
- `StyleClassifier`: softmax regression on those histograms + metre + mode (what a style is made of, not the
  tunes themselves), trained on real tunes of the held-out styles; its accuracy on samples is fidelity;
- `lcs_share`: longest common subsequence of notes (pitch, duration) / the sample's length, against the
  nearest support tune: 1 means the sample contains a support tune's notes in order (a near copy).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch

from metagen.data.tunes import DURATION_CHARS, METRES, MODES, OTHER_METRE, decode_tokens, duration_char

INTERVAL_CLIP = 12
N_DURATIONS = len(DURATION_CHARS)


def _notes(text: str) -> list[tuple[int | None, str]]:
    return [(n.pitch, duration_char(n.quarters)) for bar in decode_tokens(text).bars for n in bar]


def histograms(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Counts over a set of tunes: pitch_class [12], interval [25], duration [17] (float64)."""
    pc = np.zeros(12)
    iv = np.zeros(2 * INTERVAL_CLIP + 1)
    du = np.zeros(N_DURATIONS)
    for t in texts:
        notes = _notes(t)
        pitches = [p for p, _ in notes if p is not None]
        for p in pitches:
            pc[p % 12] += 1
        for a, b in itertools.pairwise(pitches):
            iv[max(-INTERVAL_CLIP, min(INTERVAL_CLIP, b - a)) + INTERVAL_CLIP] += 1
        for _, d in notes:
            du[DURATION_CHARS.index(d)] += 1
    return {"pitch_class": pc, "interval": iv, "duration": du}


def _normalised(h: np.ndarray) -> np.ndarray:
    total = h.sum()
    return h / total if total > 0 else np.full_like(h, 1.0 / len(h))


def histogram_distance(samples: Sequence[str], reference: Sequence[str]) -> dict[str, float]:
    """Total variation distance per histogram, and their mean ("mean")."""
    a, b = histograms(samples), histograms(reference)
    out = {k: float(0.5 * np.abs(_normalised(a[k]) - _normalised(b[k])).sum()) for k in a}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def bar_quarters(metre: str) -> Fraction | None:
    if metre == "other" or "/" not in metre:
        return None
    num, den = metre.split("/")
    return Fraction(int(num) * 4, int(den))


def metre_consistency(texts: Sequence[str]) -> float:
    """Share of inner bars (first and last left out: pickups, cut tunes) that fill their metre exactly."""
    full = total = 0
    for t in texts:
        tune = decode_tokens(t)
        length = bar_quarters(tune.metre)
        if length is None:
            continue
        for bar in tune.bars[1:-1]:
            total += 1
            got = sum(Fraction(n.quarters).limit_denominator(48) for n in bar)
            full += got == length
    return full / total if total else float("nan")


def features(text: str) -> np.ndarray:
    """One tune's style features: normalised histograms, metre one-hot, mode one-hot."""
    h = histograms([text])
    tokens = [*list(METRES.values()), OTHER_METRE]
    metre = np.zeros(len(tokens))
    mode = np.zeros(len(MODES))
    if text[:1] in tokens:
        metre[tokens.index(text[0])] = 1
    if text[1:2] in MODES.values():
        mode[list(MODES.values()).index(text[1])] = 1
    return np.concatenate([_normalised(h["pitch_class"]), _normalised(h["interval"]), _normalised(h["duration"]),
                           metre, mode])


class StyleClassifier:
    """Softmax regression on `features`, trained with L-BFGS (a convex problem: no luck involved)."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], n_classes: int, l2: float = 1e-3) -> None:
        x = torch.tensor(np.stack([features(t) for t in texts]), dtype=torch.float64)
        y = torch.tensor(list(labels))
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        x = (x - self.mean) / self.std
        self.w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ self.w + self.b, y) + l2 * (self.w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        x = torch.tensor(np.stack([features(t) for t in texts]), dtype=torch.float64)
        with torch.no_grad():
            return ((x - self.mean) / self.std @ self.w + self.b).argmax(1).numpy()


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Longest common subsequence length, one numpy row at a time."""
    if not a or not b:
        return 0
    codes = {v: i for i, v in enumerate(set(a) | set(b))}
    xa = np.array([codes[v] for v in a])
    xb = np.array([codes[v] for v in b])
    prev = np.zeros(len(xb) + 1, dtype=np.int32)
    for ch in xa:
        match = np.concatenate([[0], np.where(xb == ch, prev[:-1] + 1, 0)])
        cur = np.maximum.accumulate(np.maximum(match, prev))
        prev = cur
    return int(prev[-1])


def lcs_share(sample: str, support: Sequence[str]) -> float:
    """The largest LCS(sample, support tune) / len(sample) in notes; 0 for an empty sample."""
    notes = _notes(sample)
    if not notes:
        return 0.0
    return max(lcs_length(notes, _notes(s)) for s in support) / len(notes)

"""Stroke programs: stroke files, splines, the differentiable rasteriser, text round trips, fitting."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from tests.conftest import REAL_OMNIGLOT

from metagen.data.strokes import load_strokes, parse_drawing
from metagen.errors import DataError
from metagen.programs import Program, ProgramError, Stroke, render, render_points
from metagen.programs.fit import fit_stroke, program_from_drawing, relation
from metagen.programs.program import _basis_np, curve, point_at

STROKE_FILE = "START\n10.0,-20.0,0\n10.0,-20.0,5\n30.0,-20.0,40\nBREAK\n20.0,-10.0,60\n20.0,-30.0,90\nBREAK\n"


def test_stroke_file_parsing_flips_y_and_drops_resting_points():
    strokes = parse_drawing(STROKE_FILE)
    assert len(strokes) == 2
    np.testing.assert_allclose(strokes[0], [[10, 20], [30, 20]])  # the repeated point is gone
    np.testing.assert_allclose(strokes[1], [[20, 10], [20, 30]])
    with pytest.raises(DataError, match="line 3: expected 'x,y,t'"):
        parse_drawing("START\n1,2,3\nnot numbers\nBREAK\n")
    with pytest.raises(DataError, match="no strokes"):
        parse_drawing("START\n")


def test_stroke_archives_are_read_like_the_images(tmp_path):
    with zipfile.ZipFile(tmp_path / "strokes_background_small1.zip", "w") as zf:
        for d in (2, 1):
            zf.writestr(f"strokes_background_small1/Alpha/character01/0001_0{d}.txt",
                        STROKE_FILE if d == 1 else "START\n1,-1,0\n2,-2,1\nBREAK\n")
        zf.writestr("__MACOSX/strokes_background_small1/Alpha/character01/._0001_01.txt", "junk")
    found = load_strokes(tmp_path)
    assert list(found) == [("Alpha", "character01")]
    first, second = found[("Alpha", "character01")]
    assert len(first) == 2 and len(second) == 1  # ordered by file name, like the images
    with pytest.raises(DataError, match="no drawings of the alphabets"):
        load_strokes(tmp_path, groups={"Beta"})
    with pytest.raises(DataError, match="no Omniglot stroke data"):
        load_strokes(tmp_path / "nowhere")


def test_clamped_splines_start_and_end_at_their_end_control_points():
    for m in (1, 2, 3, 4, 7):
        b = _basis_np(m, 33)
        np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-12)  # a partition of unity
        assert (b >= -1e-12).all()
        if m > 1:
            np.testing.assert_allclose(b[0, 0], 1.0)
            np.testing.assert_allclose(b[-1, -1], 1.0)
    cp = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    np.testing.assert_allclose(curve(cp, 5)[:, 0], [0, 2.5, 5, 7.5, 10], atol=1e-6)  # a line, evenly spaced
    np.testing.assert_allclose(point_at(cp, 0.3), [3.0, 0.0], atol=1e-5)


def test_a_known_stroke_renders_where_it_is_drawn():
    # a horizontal line through the centres of pixel row 14 (14.5 * 100/28 units), from x = 20 to 80, pen 3 units
    y = 14.5 * 100 / 28
    img = render_points([torch.tensor([[20.0, y], [80.0, y]])], pen=3.0, size=28, blur=0.05)
    ink = img > 0.5
    assert ink.any(1).nonzero().flatten().tolist() == [14]
    cols = ink.any(0).nonzero().flatten().tolist()
    assert cols == list(range(5, 23))  # centres 5.5 * 3.57 = 19.6 (within the pen's overhang) ... 22.5 * 3.57 = 80.4
    assert img[0, 0] < 1e-6 and img[14, 14] > 0.99
    # a dot is a disc of the pen's width
    dot = render_points([torch.tensor([[50.0, 50.0]])], pen=30.0, size=28, blur=0.05) > 0.5
    area = dot.sum().item() * (100 / 28) ** 2
    assert abs(area - np.pi * 15**2) / (np.pi * 15**2) < 0.15


def test_rasteriser_gradients_match_finite_differences():
    torch.manual_seed(0)
    cp = (torch.rand(4, 2, dtype=torch.float64) * 60 + 20).requires_grad_()
    cp2 = (torch.rand(2, 2, dtype=torch.float64) * 60 + 20).requires_grad_()
    pen = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)

    def f(a, b, w):
        return render_points([a, b], w, size=10, blur=2.0, samples=8)

    assert torch.autograd.gradcheck(f, (cp, cp2, pen), eps=1e-6, atol=1e-5)


def test_gradients_move_a_stroke_onto_its_target():
    target = render_points([torch.tensor([[30.0, 30.0], [70.0, 70.0]])], pen=8.0, size=28).detach()
    cp = torch.tensor([[36.0, 26.0], [76.0, 66.0]], requires_grad=True)
    opt = torch.optim.Adam([cp], lr=0.5)
    for _ in range(150):
        img = render_points([cp], pen=8.0, size=28)
        loss = torch.nn.functional.binary_cross_entropy(img.clamp(1e-4, 1 - 1e-4), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (cp.detach() - torch.tensor([[30.0, 30.0], [70.0, 70.0]])).abs().max() < 1.5


def test_program_text_round_trip():
    p = Program([Stroke(torch.tensor([[3.1, -2.0], [5.0, 1.25], [8.0, 4.0]], dtype=torch.float64), "at",
                        at=(40.2, 30.1)),
                 Stroke(torch.tensor([[0.0, 12.0]], dtype=torch.float64), "end", ref=0),
                 Stroke(torch.zeros(0, 2, dtype=torch.float64), "along", ref=0, u=0.5),
                 Stroke(torch.tensor([[-4.0, 0.0]], dtype=torch.float64), "start", ref=1)], pen=2.75)
    text = p.to_text()
    assert text.splitlines()[2] == "stroke 2 from end of 1: (0.00, 12.00)"
    assert text.splitlines()[3] == "stroke 3 along 1 at 0.50:"
    q = Program.from_text(text)
    assert q.to_text() == text and q.pen == 2.75
    for a, b in zip(p.control_points(), q.control_points(), strict=True):
        torch.testing.assert_close(a, b)
    # stroke 2 starts where stroke 1 ends; stroke 4 where stroke 2 starts
    cps = q.control_points()
    torch.testing.assert_close(cps[1][0], cps[0][-1])
    torch.testing.assert_close(cps[3][0], cps[1][0])


@pytest.mark.parametrize("text, message", [
    ("", "empty program"),
    ("prog pen=2", "starts with 'program pen=W'"),
    ("program pen=2\nstroke 1 from end of 1: (1.00, 2.00)", "may only refer to an earlier stroke"),
    ("program pen=2\nstroke 2 at (1.00, 2.00):", "numbered 1, 2"),
    ("program pen=2\nstroke 1 at (1.00, 2.00): (1.0, x)", "control points of stroke 1"),
    ("program pen=0\nstroke 1 at (1.00, 2.00):", "pen width must be > 0"),
    ("program pen=2\nstroke 1 at (1, 2):\nstroke 2 along 1 at 1.50:", "u in \\[0, 1\\]"),
    ("program pen=2\nstroke one", "cannot read"),
])
def test_malformed_program_text_is_one_clear_error(text, message):
    with pytest.raises(ProgramError, match=message):
        Program.from_text(text)


def test_fitting_keeps_shapes_and_finds_relations():
    line = np.stack([np.linspace(10, 90, 40), np.full(40, 50.0)], 1)
    assert fit_stroke(line).shape == (2, 2)  # a straight line needs two control points
    dot = np.array([[50.0, 50.0], [50.3, 50.2]])
    assert fit_stroke(dot).shape == (1, 2)
    t = np.linspace(0, np.pi, 80)
    arc = np.stack([50 + 30 * np.cos(t), 50 + 30 * np.sin(t)], 1)
    cp = fit_stroke(arc, tolerance=0.5)
    dense = _basis_np(len(cp), 200) @ cp
    assert 4 <= len(cp) <= 10 and np.abs(np.linalg.norm(dense - 50, axis=1) - 30).max() < 1.0
    earlier = [np.array([[10.0, 50.0], [90.0, 50.0]])]
    assert relation(np.array([90.5, 50.5]), earlier)[:2] == ("end", 0)
    assert relation(np.array([10.0, 51.0]), earlier)[:2] == ("start", 0)
    rel, ref, u = relation(np.array([50.0, 51.0]), earlier)
    assert (rel, ref) == ("along", 0) and abs(u - 0.5) < 0.02
    assert relation(np.array([50.0, 80.0]), earlier)[0] == "at"
    # a T: the stem starts along the bar; the program keeps it attached
    drawing = [np.array([[20.0, 20.0], [85.0, 20.0]]) * 1.05, np.array([[52.5, 21.0], [52.5, 90.0]]) * 1.05]
    program = program_from_drawing(drawing)
    assert [s.relation for s in program.strokes] == ["at", "along"]


@pytest.mark.skipif(not (REAL_OMNIGLOT / "omniglot" / "strokes_background_small1.zip").is_file(),
                    reason="needs ../shared/data/omniglot")
def test_real_programs_render_like_the_real_images():
    from PIL import Image

    from metagen.data.images import binarize

    drawings = load_strokes(REAL_OMNIGLOT, groups={"Balinese"})
    with zipfile.ZipFile(REAL_OMNIGLOT / "omniglot" / "images_background_small1.zip") as zf:
        names = sorted(n for n in zf.namelist() if "/Balinese/character0" in n and n.endswith(".png"))
        ious = []
        for char in ("character01", "character05", "character09"):
            files = [n for n in names if f"/{char}/" in n][:4]
            for drawing, name in zip(drawings[("Balinese", char)], files, strict=False):
                img = np.asarray(binarize(Image.open(io.BytesIO(zf.read(name))), 28, "resize")).reshape(28, 28) > 0
                mine = render(program_from_drawing(drawing, pen=4.5), 28).numpy() > 0.5
                ious.append((mine & img).sum() / (mine | img).sum())
    assert np.mean(ious) > 0.6, ious  # the trajectories and images share one frame


# -- the generator: noise, likelihood, inference ------------------------------------------------------------
from metagen.programs.encoder import StrokeEncoder, bernoulli_nll, render_batch, train_encoder  # noqa: E402
from metagen.programs.model import NoiseModel, StrokeType, estimate_noise, infer_type  # noqa: E402
from metagen.programs.viz import strokes_over  # noqa: E402


def _synthetic_drawings(n_chars: int = 30, drawers: int = 6, shift: float = 3.0, jitter: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(n_chars):
        base = rng.uniform(25, 75, size=(2, 6, 2))
        drawings = []
        for _ in range(drawers):
            cps = base + rng.normal(0, shift, size=2) + rng.normal(0, jitter, size=base.shape)
            drawings.append([curve(torch.from_numpy(cp), 40).numpy() * 1.05 for cp in cps])  # 105-pixel frame
        out[("A", f"c{c}")] = drawings
    return out


def test_motor_noise_is_estimated_from_the_drawers_spread():
    noise = estimate_noise(_synthetic_drawings(), strokes=4, control=6)
    assert 2.0 < noise.shift < 4.2, noise
    assert 0.6 < noise.jitter < 1.5, noise
    assert noise.log_scale < 0.1, noise


def test_likelihood_bound_against_numerical_integration():
    # a one-stroke type whose only real noise is a shift (std 3): p(x) is a 2-D integral, done on a grid
    torch.manual_seed(0)
    noise = NoiseModel(shift=3.0, log_scale=1e-3, jitter=1e-3, log_pen=1e-3, flip=0.02)
    cps = torch.tensor([[[30.0, 30.0], [45.0, 40.0], [55.0, 55.0], [60.0, 70.0], [65.0, 72.0], [70.0, 75.0]]])
    cps = torch.cat([cps, torch.zeros(1, 6, 2)]).double()
    ty = StrokeType(cps, torch.tensor([1.0, 0.0], dtype=torch.float64), pen=9.0, noise=noise, size=12)
    x = ty.sample(3, generator=torch.Generator().manual_seed(1), binary=True)  # [3, 1, 12, 12]
    step = 0.25
    grid = torch.arange(-24, 24 + step, step, dtype=torch.float64)
    sx, sy = torch.meshgrid(grid, grid, indexing="ij")
    shifts = torch.stack([sx.flatten(), sy.flatten()], -1)  # [G, 2]
    G = len(shifts)
    zeros = torch.zeros(G, dtype=torch.float64)
    probs = ty._render(shifts, zeros, zeros, torch.zeros(G, 2, 6, 2, dtype=torch.float64))  # [G, 12, 12]
    log_prior = (-0.5 * (shifts / 3.0) ** 2).sum(-1) - 2 * np.log(3.0) - np.log(2 * np.pi) + 2 * np.log(step)
    exact = torch.stack([torch.logsumexp(-bernoulli_nll(probs, xi[0].expand(G, -1, -1)) + log_prior, 0) for xi in x])
    bound = ty.log_prob(x, iw_samples=400, generator=torch.Generator().manual_seed(2))
    assert (bound <= exact + 0.5).all(), (bound, exact)  # a lower bound (up to Monte Carlo error)
    assert (bound >= exact - 8.0).all(), (bound, exact)  # and not a vacuous one


class _OracleEncoder(torch.nn.Module):
    """Returns a fixed guess of the strokes: the truth moved 7 canvas units across the stroke's direction."""

    def __init__(self, cps: torch.Tensor) -> None:
        super().__init__()
        self.cps = cps

    def forward(self, images):
        B = images.shape[0]
        logits = torch.tensor([6.0, -6.0]).expand(B, -1)
        return (self.cps + torch.tensor([5.0, -5.0]))[None].expand(B, -1, -1, -1), logits, torch.full((B,), 8.0)


def test_inferred_type_finds_the_strokes_behind_a_few_images():
    truth = torch.tensor([[[25.0, 30.0], [40.0, 35.0], [50.0, 50.0], [55.0, 65.0], [62.0, 70.0], [70.0, 72.0]],
                          [[0.0, 0.0]] * 6])
    noise = NoiseModel(shift=2.0, log_scale=0.05, jitter=0.5, log_pen=0.05)
    generating = StrokeType(truth, torch.tensor([1.0, 0.0]), pen=8.0, noise=noise)
    support = generating.sample(3, generator=torch.Generator().manual_seed(0), binary=True)
    ty = infer_type(_OracleEncoder(truth), support, noise, refine_steps=60, joint_steps=60)
    assert ty.presence.tolist() == [1.0, 0.0]
    # the curves as point sets (control points and direction are not identifiable from pixels): Chamfer distance
    def chamfer(a, b):
        d = torch.cdist(curve(a, 60), curve(b, 60))
        return (d.min(0).values.mean() + d.min(1).values.mean()) / 2

    err, start = chamfer(ty.cps[0], truth[0]), chamfer(truth[0] + torch.tensor([5.0, -5.0]), truth[0])
    assert err < 1.5 and start > 4.0, (err, start)
    held_out = generating.sample(4, generator=torch.Generator().manual_seed(5), binary=True)
    other = StrokeType(truth.flip(1) * 0.5 + 30, torch.tensor([1.0, 0.0]), pen=8.0, noise=noise)
    assert (ty.log_prob(held_out, iw_samples=20) > other.log_prob(held_out, iw_samples=20)).all()
    text = ty.program().to_text()
    assert text.startswith("program pen=") and text.count("stroke") == 1
    assert strokes_over(support[0], ty.cps, ty.presence, scale=4).size == (112, 112)


def test_encoder_training_lowers_its_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cps = torch.rand(64, 2, 4, 2, generator=g) * 60 + 20
    present = torch.tensor([[1.0, 0.0]]).expand(64, -1).clone()
    with torch.no_grad():
        images = (render_batch(cps, present, torch.full((64,), 8.0), 28) > 0.5).float()[:, None]
    encoder = StrokeEncoder(28, strokes=2, control=4, channels=8, hidden=64)
    log = train_encoder(encoder, images, cps, present, steps=150, batch=16, lr=3e-3, progress=False)
    assert log[-1]["geometry"] < 0.6 * log[0]["geometry"], log


def test_the_prior_over_programs_learns_counts_and_draws_valid_types():
    from metagen.programs.model import ProgramPrior

    g = torch.Generator().manual_seed(0)
    N = 200
    cps = torch.rand(N, 3, 4, 2, generator=g) * 40 + 30
    present = torch.zeros(N, 3)
    present[:, 0] = 1
    present[: N // 4, 1] = 1  # a quarter of the drawings have two strokes
    cps[: N // 4, 1, 0] = cps[: N // 4, 0, -1]  # ... whose second stroke starts where the first ends
    prior = ProgramPrior.fit(cps, present)
    torch.testing.assert_close(prior.stroke_counts, torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64))
    assert prior.relations.argmax().item() == 2  # "end"
    counts = []
    for _ in range(40):
        ty = prior.sample(NoiseModel(), generator=g)
        counts.append(int(ty.presence.sum()))
        program = Program.from_text(ty.program().to_text())  # every imagined type is a readable program
        assert len(program.strokes) == counts[-1]
        assert ty.sample(2, generator=g).shape == (2, 1, 28, 28)
    assert 0.5 < counts.count(1) / 40 < 0.95


def test_joint_refit_can_keep_the_candidates_strokes():
    # two strokes, the second drawn in a different place by every "drawer": a refit of presence may drop it,
    # keep_strokes must not
    truth = torch.tensor([[[25.0, 30.0], [40.0, 35.0], [50.0, 50.0], [55.0, 65.0], [62.0, 70.0], [70.0, 72.0]],
                          [[20.0, 80.0], [30.0, 80.0], [40.0, 80.0], [50.0, 80.0], [60.0, 80.0], [70.0, 80.0]]])
    noise = NoiseModel(shift=1.0, log_scale=0.02, jitter=0.5, log_pen=0.02)
    images = []
    for i, dy in enumerate((-12.0, 0.0, 12.0)):
        moved = truth.clone()
        moved[1, :, 1] += dy
        ty = StrokeType(moved, torch.tensor([1.0, 1.0]), pen=8.0, noise=noise)
        images.append(ty.sample(1, generator=torch.Generator().manual_seed(i), binary=True))
    support = torch.cat(images)

    class Encoder(torch.nn.Module):
        def forward(self, x):
            B = x.shape[0]
            return truth[None].expand(B, -1, -1, -1), torch.tensor([6.0, 0.3]).expand(B, -1), torch.full((B,), 8.0)

    for image_jitter in (False, True):
        ty = infer_type(Encoder(), support, noise, refine_steps=5, joint_steps=30, keep_strokes=True,
                        image_jitter=image_jitter)
        assert ty.presence.tolist() == [1.0, 1.0]
        assert torch.isfinite(ty.cps).all()
        assert torch.isfinite(ty.log_prob(support, iw_samples=4)).all()

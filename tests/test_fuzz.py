"""Fuzzing with Hypothesis: random config overrides and damaged support images only ever end cleanly.

A clean end is exit 0, or exit 2 with one `metagen: error:` line; never a traceback. Examples are
derandomized so CI sees the same cases each run; `make test-slow` runs more random ones.
"""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from metagen.cli import main
from metagen.config import load_config
from metagen.data.images import load_image
from metagen.errors import DataError

TINY = ["--set", "generator.latent_dim=4", "--set", "generator.channels=4", "--set", "generator.hidden=16",
        "--set", "learner.context_dim=4", "--set", "learner.hidden=16", "--set", "learner.channels=4",
        "--set", "train.meta_batch=4", "--quiet"]
FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MORE = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _keys() -> list[str]:
    cfg = load_config("glyphs").to_dict()
    keys = [f"{section}.{key}" for section, values in cfg.items() for key in values]
    return sorted(k for k in keys if k not in ("train.steps", "train.device"))  # steps: kept at 1 for speed


KEYS = _keys()
NAMES = ["vae", "gan", "flow", "pixelcnn", "diffusion", "lstm", "transformer", "context", "spatial", "maml",
         "fomaml", "metasgd", "reptile", "hyper", "attention", "finetune", "scratch", "copy", "unconditional",
         "omniglot", "fortunes", "glyphs", "nonsense", ""]
VALUES = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(["0", "1e30", "-1e-9", "nan", "inf", "-inf", "0.5", "true", "false", "[]", "[1, 3]", "[0]",
                     "{}", "[1, 'a']", "'auto'", "'cuda:7'", "\"\"", "[[1]]", "1_000_000_000"]),
    st.sampled_from(NAMES).map(repr),
    st.text(max_size=12),
)
OVERRIDE = st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
                     st.text(max_size=20))
_counter = itertools.count()


def _assert_clean(code: int, capsys, argparse: bool = False) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 2), code
    if code == 2 and argparse:  # argparse's own usage line, then one error line
        assert err[-1].startswith("metagen train: error:"), err
    elif code == 2:
        assert len(err) == 1 and err[0].startswith("metagen: error:"), err


def _check_overrides(tmp_path, capsys, overrides: list[str]) -> None:
    sets = [a for o in overrides for a in ("--set", o)]
    out = str(tmp_path / f"run{next(_counter)}")
    try:
        code = main(["train", "--config", "glyphs", "--out", out, "--steps", "1", *TINY, *sets])
    except SystemExit as e:  # argparse itself: an option-like value it cannot parse
        _assert_clean(e.code, capsys, argparse=True)
    else:
        _assert_clean(code, capsys)


@FAST
@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=3))
def test_random_config_overrides_end_cleanly(tmp_path, capsys, overrides):
    _check_overrides(tmp_path, capsys, overrides)


@pytest.mark.slow
@MORE
@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=4))
def test_random_config_overrides_end_cleanly_many(tmp_path, capsys, overrides):
    _check_overrides(tmp_path, capsys, overrides)


def _encoded(fmt: str) -> bytes:
    img = Image.new("RGB", (48, 40), "white")
    ImageDraw.Draw(img).line([(8, 8), (40, 30), (10, 34)], fill="black", width=5)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


ENCODED = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")}


@st.composite
def damaged_images(draw) -> bytes:
    """Random bytes, or a valid image with some bytes replaced, cut short or repeated."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    data = bytearray(ENCODED[draw(st.sampled_from(sorted(ENCODED)))])
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        start = draw(st.integers(0, max(0, len(data) - 1)))
        data[start:start] = data[start : start + draw(st.integers(0, 64))] * draw(st.integers(1, 4))
    return bytes(data)


def _check_image(data: bytes) -> None:
    for layout in ("fit", "resize"):
        try:
            x = load_image(data, 28, layout, name="fuzzed")
        except DataError as e:
            assert "\n" not in str(e) and "fuzzed" in str(e)
        else:
            assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and set(x.unique().tolist()) <= {0.0, 1.0}


@FAST
@given(data=damaged_images())
def test_damaged_image_bytes_decode_or_give_a_data_error(data):
    _check_image(data)


@pytest.mark.slow
@MORE
@given(data=damaged_images())
def test_damaged_image_bytes_decode_or_give_a_data_error_many(data):
    _check_image(data)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> str:
    run = str(tmp_path_factory.mktemp("fuzz") / "run")
    assert main(["train", "--config", "glyphs", "--out", run, "--steps", "2", *TINY]) == 0
    return run


@FAST
@given(data=damaged_images())
def test_damaged_support_files_through_the_cli_end_cleanly(tmp_path, capsys, tiny_run, data):
    path = tmp_path / f"support{next(_counter)}.png"
    path.write_bytes(data)
    code = main(["adapt", "--checkpoint", tiny_run, "--support", str(path), "--n", "2", "--quiet",
                 "--out", str(tmp_path / "out.png")])
    _assert_clean(code, capsys)

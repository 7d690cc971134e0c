import numpy as np
import pytest
from PIL import Image, ImageDraw

from metagen.data.images import load_image, load_support
from metagen.errors import DataError


def _glyph(size=200, ink=0, paper=255, mode="L"):
    img = Image.new(mode, (size, size), paper)
    ImageDraw.Draw(img).rectangle([size // 3, size // 4, size // 2, 3 * size // 4], fill=ink)
    return img


def test_any_format_and_size_becomes_binary_28(tmp_path):
    paths = []
    for i, (fmt, img) in enumerate([("png", _glyph(300)), ("jpeg", _glyph(64).convert("RGB")),
                                     ("bmp", _glyph(50)), ("gif", _glyph(120))]):
        paths.append(tmp_path / f"x{i}.{fmt}")
        img.save(paths[-1])
    x = load_support(paths, 28, "resize")
    assert x.shape == (4, 1, 28, 28) and x.dtype.is_floating_point
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert (x.flatten(1).sum(1) > 0).all()


def test_light_on_dark_and_transparent_images_read_as_ink(tmp_path):
    dark = _glyph(100, ink=255, paper=0)
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle([33, 25, 50, 75], fill=(0, 0, 0, 255))
    dark.save(tmp_path / "dark.png")
    rgba.save(tmp_path / "rgba.png")
    _glyph(100).save(tmp_path / "plain.png")
    plain = load_image(tmp_path / "plain.png", 28, "resize")
    assert (load_image(tmp_path / "dark.png", 28, "resize") == plain).all()
    assert (load_image(tmp_path / "rgba.png", 28, "resize") == plain).all()
    assert plain.mean() < 0.3  # ink is the minority, not the background


def test_fit_layout_centres_and_scales_the_ink(tmp_path):
    small = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(small).rectangle([10, 10, 40, 70], fill=0)  # a small mark in a corner
    small.save(tmp_path / "corner.png")
    x = load_image(tmp_path / "corner.png", 28, "fit")[0]
    ys, xs = np.nonzero(x.numpy())
    assert ys.max() - ys.min() + 1 >= 19  # the tall side fills ~20/28 of the canvas
    assert abs((ys.min() + ys.max()) / 2 - 13.5) <= 1 and abs((xs.min() + xs.max()) / 2 - 13.5) <= 1


def test_bad_images_give_one_line_errors(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="cannot read image .*corrupt.png"):
        load_image(tmp_path / "corrupt.png", 28, "resize")
    with pytest.raises(DataError, match="no ink"):
        load_image(tmp_path / "blank.png", 28, "resize")
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "missing.png", 28, "resize")
    with pytest.raises(DataError, match="support set is empty"):
        load_support([], 28, "resize")

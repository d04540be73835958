"""Mode conversions and resize policies of the one decode function."""
import numpy as np
import pytest
from PIL import Image

from imgclf.data.images import decode, to_mode
from imgclf.errors import ImgclfError


def _save(tmp_path, im, name):
    p = tmp_path / name
    im.save(p)
    return p


def test_palette_becomes_its_colours(tmp_path):
    im = Image.new("P", (4, 4))
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.paste(1, (0, 0, 4, 4))
    out = decode(_save(tmp_path, im, "p.png"), 4, 3)
    assert out.shape == (4, 4, 3) and (out == [10, 200, 30]).all()


def test_grey_repeats_to_rgb_and_rgb_to_luma(tmp_path):
    out = decode(_save(tmp_path, Image.new("L", (4, 4), 77), "l.png"), 4, 3)
    assert (out == 77).all()
    out = decode(_save(tmp_path, Image.new("RGB", (4, 4), (255, 0, 0)), "r.png"), 4, 1)
    assert out.shape == (4, 4, 1) and out[0, 0, 0] == 76  # 0.299 · 255


@pytest.mark.parametrize("mode,colour", [("RGBA", (0, 0, 0, 0)), ("LA", (0, 0))])
def test_transparent_pixels_become_white(tmp_path, mode, colour):
    out = decode(_save(tmp_path, Image.new(mode, (4, 4), colour), f"{mode}.png"), 4, 3)
    assert (out == 255).all()


def test_half_transparent_red_over_white(tmp_path):
    out = decode(_save(tmp_path, Image.new("RGBA", (2, 2), (255, 0, 0, 128)), "a.png"), 2, 3)
    assert tuple(out[0, 0]) == (255, 127, 127)


def test_16_bit_scales_to_8_bit(tmp_path):
    a = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    p = _save(tmp_path, Image.fromarray(a), "w.png")
    assert Image.open(p).mode.startswith("I")
    out = decode(p, 2, 1)
    assert out[..., 0].tolist() == [[0, 255], [100, 200]]


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((2, 4, 3), np.uint8)  # 2 high, 4 wide; a red pixel at the top-left
    a[0, 0] = (255, 0, 0)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    p = tmp_path / "rot.png"
    im.save(p, exif=exif)
    shown = to_mode(__import__("imgclf.data.images", fromlist=["open_image"]).open_image(p), 3)
    assert shown.size == (2, 4)  # now 4 high, 2 wide
    assert np.asarray(shown)[0, 1].tolist() == [255, 0, 0]  # the top-left went to the top-right


@pytest.mark.parametrize("policy", ["squash", "center-crop", "pad"])
def test_resize_policies_give_a_square(tmp_path, policy):
    a = np.full((10, 20, 3), 200, np.uint8)
    out = decode(_save(tmp_path, Image.fromarray(a), "w.png"), 8, 3, policy)
    assert out.shape == (8, 8, 3)
    if policy == "pad":  # 20×10 → 8×4 centred, black above and below
        assert (out[0] == 0).all() and (out[4] == 200).all()
    else:
        assert (out == 200).all()


@pytest.mark.parametrize("peak", [1000, 255])
def test_dark_16_bit_scales_by_its_mode_not_its_pixels(tmp_path, peak):
    a = np.array([[0, peak // 2], [peak, peak]], dtype=np.uint16)  # dark: max `peak` of 65535
    p = _save(tmp_path, Image.fromarray(a), "dark.png")
    assert Image.open(p).mode == "I;16"
    out = decode(p, 2, 1)[..., 0]
    assert out.tolist() == np.rint(a.astype(float) * 255 / 65535).astype(int).tolist()  # peak 255 → 1, not 255


@pytest.mark.parametrize("mode, dtype", [("I;16B", ">u2"), ("I;16L", "<u2"), ("I", "=i4")])
def test_every_wide_integer_mode_scales_65535_to_255(mode, dtype):
    for value, want in ((255, 1), (1000, 4), (65535, 255)):
        im = Image.frombytes(mode, (1, 1), np.array(value, dtype).tobytes())
        assert np.asarray(to_mode(im, 1)).item() == want, (mode, value)


def test_error_shows_the_plain_path_not_np_str(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"not a png")
    with pytest.raises(ImgclfError) as e:
        decode(np.array([str(p)])[0], 4, 3)  # a manifest's paths are numpy strings
    assert "np.str_" not in str(e.value) and f"'{p}'" in str(e.value)

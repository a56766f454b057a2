from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.io import write_jpeg, write_png

from sslvision.data.decode import read_image_rgb, read_image_uint8
from sslvision.errors import CorruptImageError

# The test images are written with torchvision's (deprecated in 0.29) encoders.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _png_bytes(
    rows: list[bytes], width: int, color_type: int, bit_depth: int, palette: bytes = b""
) -> bytes:
    """A minimal valid PNG (no filtering) for the formats torchvision cannot encode."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, len(rows), bit_depth, color_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    body = chunk(b"IHDR", header) + (chunk(b"PLTE", palette) if palette else b"")
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _bmp_bytes(rgb: torch.Tensor) -> bytes:
    """A 24-bit BMP (bottom-up BGR rows padded to 4 bytes) of an (H, W, 3) uint8 tensor."""
    height, width, _ = rgb.shape
    row_size = (3 * width + 3) // 4 * 4
    rows = [
        bytes(rgb[y].flip(-1).flatten().tolist()).ljust(row_size, b"\x00")
        for y in reversed(range(height))
    ]
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, row_size * height, 0, 0, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 54 + row_size * height, 0, 0, 54)
    return header + info + b"".join(rows)


def test_grayscale_png_becomes_rgb(tmp_path: Path) -> None:
    gray = torch.randint(0, 256, (1, 6, 5), dtype=torch.uint8)
    write_png(gray, str(tmp_path / "gray.png"))
    image = read_image_uint8(tmp_path / "gray.png", 6)
    assert image.dtype == torch.uint8 and image.shape == (3, 6, 6)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = torch.randint(0, 256, (4, 4, 4), dtype=torch.uint8)  # (H, W, RGBA)
    rows = [bytes(rgba[y].flatten().tolist()) for y in range(4)]
    (tmp_path / "rgba.png").write_bytes(_png_bytes(rows, width=4, color_type=6, bit_depth=8))
    image = read_image_uint8(tmp_path / "rgba.png", 4)
    assert torch.equal(image, rgba[..., :3].permute(2, 0, 1))


def test_palette_png_is_expanded(tmp_path: Path) -> None:
    palette = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])
    rows = [bytes([0, 1, 2, 1]), bytes([2, 2, 0, 0]), bytes([1, 0, 1, 0]), bytes([0, 0, 0, 2])]
    (tmp_path / "palette.png").write_bytes(_png_bytes(rows, 4, 3, 8, palette=palette))
    image = read_image_uint8(tmp_path / "palette.png", 4)
    assert image[:, 0, 0].tolist() == [255, 0, 0]
    assert image[:, 0, 1].tolist() == [0, 255, 0]
    assert image[:, 1, 0].tolist() == [0, 0, 255]


def test_16_bit_png_comes_out_uint8_in_range(tmp_path: Path) -> None:
    values = [[0, 65535], [256 * 164 + 7, 32768]]
    rows = [b"".join(struct.pack(">H", value) for value in row) for row in values]
    (tmp_path / "deep.png").write_bytes(_png_bytes(rows, width=2, color_type=0, bit_depth=16))
    image = read_image_uint8(tmp_path / "deep.png", 2)
    assert image.dtype == torch.uint8
    # scaled by 255 / 65535 and rounded: 41991 -> 163.4, 32768 -> 127.5
    assert image[0].tolist() == [[0, 255], [163, 128]]


def test_jpeg_is_resized_to_a_contiguous_square(tmp_path: Path) -> None:
    write_jpeg(torch.randint(0, 256, (3, 20, 12), dtype=torch.uint8), str(tmp_path / "a.jpg"))
    image = read_image_uint8(str(tmp_path / "a.jpg"), 8)
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and image.is_contiguous()


def _left_quarter_white() -> Image.Image:
    """A 10-high, 20-wide black image whose left 5 columns are white."""
    pixels = torch.zeros(10, 20, 3, dtype=torch.uint8)
    pixels[:, :5] = 255
    return Image.fromarray(pixels.numpy())


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    _left_quarter_white().convert("CMYK").save(tmp_path / "print.jpg", quality=100)
    image = read_image_rgb(tmp_path / "print.jpg")
    assert image.shape == (3, 10, 20)
    assert image[:, :, :4].min() > 240 and image[:, :, 6:].max() < 15  # not inverted


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Orientation 6: the camera was turned a quarter clockwise; the viewer rotates it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    _left_quarter_white().save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=100)
    image = read_image_rgb(tmp_path / "turned.jpg")
    assert image.shape == (3, 20, 10)  # upright: 20 high, 10 wide
    assert image[:, :4].min() > 240 and image[:, 6:].max() < 15  # the white band is on top


def test_bmp_is_decoded(tmp_path: Path) -> None:
    rgb = torch.randint(0, 256, (3, 3, 3), dtype=torch.uint8)  # (H, W, RGB)
    (tmp_path / "a.bmp").write_bytes(_bmp_bytes(rgb))
    image = read_image_uint8(tmp_path / "a.bmp", 3)
    assert torch.equal(image, rgb.permute(2, 0, 1))


def test_random_bytes_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(bytes(torch.randint(0, 256, (200,), dtype=torch.uint8).tolist()))
    with pytest.raises(CorruptImageError, match=r"noise\.jpg: not a JPEG, PNG") as error:
        read_image_uint8(path, 8)
    assert str(path.absolute()) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_empty_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty.png").touch()
    with pytest.raises(CorruptImageError, match=r"empty\.png: file is empty"):
        read_image_uint8(tmp_path / "empty.png", 8)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CorruptImageError, match=r"gone\.png: no such file"):
        read_image_uint8(tmp_path / "gone.png", 8)


def test_truncated_png_is_reported(tmp_path: Path) -> None:
    write_png(torch.zeros(3, 16, 16, dtype=torch.uint8), str(tmp_path / "full.png"))
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:50])
    with pytest.raises(CorruptImageError, match=r"cut\.png: cannot decode"):
        read_image_uint8(tmp_path / "cut.png", 8)


def test_corrupt_bmp_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.bmp").write_bytes(b"BM" + b"\x01" * 30)
    with pytest.raises(CorruptImageError, match=r"bad\.bmp: cannot decode"):
        read_image_uint8(tmp_path / "bad.bmp", 8)


def test_non_positive_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        read_image_uint8(tmp_path / "any.png", 0)

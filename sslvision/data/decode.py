"""Decode one image file into a uint8 RGB tensor on a CPU worker.

Only integer work happens here (decode + antialiased uint8 resize); every float operation
(crops, colour jitter, normalisation) runs later, batched, on the device. Decoding is
TorchCodec's, which supersedes torchvision's deprecated decoders: it applies the EXIF
orientation and turns grayscale, palette, RGBA, CMYK and 16-bit images into 8-bit RGB.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image
from torchcodec.decoders import decode_image
from torchvision.transforms.v2.functional import resize

from sslvision.errors import ConfigError, CorruptImageError

# TorchCodec decodes JPEG, PNG, GIF, WebP, AVIF and HEIC. BMP and TIFF are valid image-folder
# extensions it cannot read, so only those formats (recognised by their magic bytes) go
# through Pillow.
_PILLOW_ONLY_MAGIC = (b"BM", b"II*\x00", b"MM\x00*")
# TorchCodec prefixes its decoding errors with "<function>, <source file>:<line>, ".
_DECODER_ERROR_PREFIX = re.compile(r"^[^,]+, \S+:\d+, ")


def read_image_uint8(path: str | Path, size: int) -> torch.Tensor:
    """Read ``path`` as RGB and resize the whole image to a contiguous uint8 (3, size, size).

    Grayscale, RGBA, palette and 16-bit images all come out as 8-bit RGB. Raises
    ``CorruptImageError`` (naming the file and the reason) for anything that is not a readable
    image.
    """
    if size <= 0:
        raise ConfigError(f"image size must be a positive integer, got {size}")
    image = read_image_rgb(path)
    if tuple(image.shape[-2:]) != (size, size):
        image = resize(image, [size, size], antialias=True)
    return image.contiguous()


def read_image_rgb(path: str | Path) -> torch.Tensor:
    """Read ``path`` as 8-bit RGB (3, H, W) at its own size; errors name the file."""
    path = _existing_file(path)
    return _decode_rgb(path)


def read_file_bytes(path: str | Path) -> torch.Tensor:
    """``path``'s bytes as a 1-D uint8 tensor, to decode elsewhere; a missing or empty file
    raises the same ``CorruptImageError`` as :func:`read_image_rgb`."""
    path = _existing_file(path)
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CorruptImageError(path, "no such file")
    if path.stat().st_size == 0:
        raise CorruptImageError(path, "file is empty (0 bytes)")
    return path


def _decode_rgb(path: Path) -> torch.Tensor:
    """Decode with TorchCodec, falling back to Pillow only for BMP and TIFF files."""
    try:
        return decode_image(path, mode="RGB")
    except (RuntimeError, ValueError) as error:  # ValueError: a format it does not know
        if _has_pillow_only_magic(path):
            return _decode_rgb_with_pillow(path)
        raise CorruptImageError(path, _reason_from_decoder(error)) from error


def _reason_from_decoder(error: Exception) -> str:
    if isinstance(error, ValueError):
        return "not a JPEG, PNG, GIF, WebP, AVIF, HEIC, BMP or TIFF image"
    return f"cannot decode ({_DECODER_ERROR_PREFIX.sub('', str(error).splitlines()[0])})"


def _has_pillow_only_magic(path: Path) -> bool:
    with path.open("rb") as file:
        header = file.read(4)
    return header.startswith(_PILLOW_ONLY_MAGIC)


def _decode_rgb_with_pillow(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")
    except (OSError, SyntaxError) as error:
        raise CorruptImageError(path, f"cannot decode ({error})") from error
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1)

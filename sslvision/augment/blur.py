"""Random Gaussian blur of a batch as two batched matrix products, one sigma per sample.

SimCLR's blur (appendix A: p=0.5, sigma uniform in [0.1, 2], kernel 10% of the view) draws a
new sigma for every image, so the kernel differs per sample. A convolution then has to run
grouped over batch x channels with per-sample weights, which CPU and GPU libraries run far
below their matrix-product speed (kornia's ``gaussian_blur2d`` took 226 ms for 64 views of
224 px on 2 CPU cores). Written as ``K_h @ x @ K_w^T``, with each sample's 1-D kernel laid out
as a banded matrix that folds in the reflected border, the blur is two ``bmm`` calls (105 ms
there). The rows to blur are drawn on the host, so selecting them never waits for the device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def blur_matrices(sigma: Tensor, kernel_size: int, length: int) -> Tensor:
    """(B, length, length) matrices ``M`` with ``(M @ x)[i] = sum_j g(i - j) x[j]`` over a
    reflected border (``x[-1] = x[1]``, as ``torch.nn.functional.pad(mode="reflect")``), for the
    normalised Gaussian ``g`` of each sample's ``sigma`` truncated to ``kernel_size`` taps."""
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    radius = kernel_size // 2
    if radius >= length:
        raise ValueError(f"a {kernel_size}-tap blur needs images over {radius} px, got {length}")
    offsets = torch.arange(-radius, radius + 1, device=sigma.device)
    taps = torch.exp(-(offsets.float() ** 2) / (2 * sigma.float()[:, None] ** 2))
    taps = taps / taps.sum(dim=1, keepdim=True)  # (B, k)
    source = (torch.arange(length, device=sigma.device)[:, None] + offsets).abs()  # (L, k)
    source = torch.where(source > length - 1, 2 * (length - 1) - source, source)
    matrices = torch.zeros(len(sigma), length, length, device=sigma.device)
    index = source.expand(len(sigma), -1, -1)
    return matrices.scatter_add_(2, index, taps[:, None, :].expand(-1, length, -1))


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """``images`` (B, C, H, W) float, blurred with sigma ``sigma[b]`` (B,) along both axes.

    Runs in float32 with autocast off: under bf16 autocast the products would round every pixel.
    """
    batch, channels, height, width = images.shape
    with torch.autocast(images.device.type, enabled=False):
        rows = blur_matrices(sigma, kernel_size, height)  # (B, H, H)
        cols = blur_matrices(sigma, kernel_size, width).transpose(1, 2)  # (B, W, W)
        x = images.float().reshape(batch, channels * height, width) @ cols
        x = rows[:, None] @ x.view(batch, channels, height, width)
    return x.to(images.dtype)


class RandomGaussianBlur(nn.Module):
    """Blurs each image with probability ``p`` and sigma uniform in ``sigma_range``.

    Draws from torch's global RNG on the CPU, like the kornia ops beside it, so
    ``torch.manual_seed`` fixes the result. Only the drawn rows are blurred; the others are
    returned unchanged.

    >>> blur = RandomGaussianBlur(kernel_size=5, sigma_range=(0.1, 2.0), p=0.0)
    >>> images = torch.rand(2, 3, 8, 8)
    >>> torch.equal(blur(images), images)
    True
    """

    def __init__(self, kernel_size: int, sigma_range: tuple[float, float], p: float) -> None:
        super().__init__()
        low, high = sigma_range
        if not 0 < low <= high:
            raise ValueError(f"sigma_range must be positive and ordered, got {sigma_range}")
        self.kernel_size, self.sigma_range, self.p = kernel_size, (low, high), p

    def forward(self, images: Tensor) -> Tensor:
        batch = images.shape[0]
        low, high = self.sigma_range
        sigma = torch.empty(batch).uniform_(low, high)
        # The draws are on the host, so picking the rows to blur never waits for the device.
        rows = (torch.rand(batch) < self.p).nonzero().squeeze(1)
        if len(rows) == 0:
            return images
        on_device = rows.to(images.device, non_blocking=True)
        blurred = gaussian_blur(
            images.index_select(0, on_device), sigma[rows].to(images.device), self.kernel_size
        )
        return images.index_copy(0, on_device, blurred)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma_range={self.sigma_range}, p={self.p}"

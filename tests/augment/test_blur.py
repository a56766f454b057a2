"""The matrix-product Gaussian blur against kornia's convolution and a hand-written loop."""

from __future__ import annotations

import kornia
import pytest
import torch

from sslvision.augment.blur import RandomGaussianBlur, blur_matrices, gaussian_blur


def naive_blur_1d(signal: list[float], sigma: float, kernel_size: int) -> list[float]:
    """The definition: normalised Gaussian taps over a mirrored border (x[-1] = x[1])."""
    radius = kernel_size // 2
    weights = [
        torch.exp(torch.tensor(-(d**2) / (2 * sigma**2))).item() for d in range(-radius, radius + 1)
    ]
    total = sum(weights)
    last = len(signal) - 1
    out = []
    for i in range(len(signal)):
        value = 0.0
        for d, w in zip(range(-radius, radius + 1), weights, strict=True):
            j = abs(i + d)
            j = 2 * last - j if j > last else j
            value += w / total * signal[j]
        out.append(value)
    return out


def test_a_matrix_applies_the_gaussian_with_a_mirrored_border() -> None:
    signal = [0.0, 1.0, 5.0, 2.0, 7.0, 3.0]
    matrix = blur_matrices(torch.tensor([1.3]), 5, len(signal))[0]
    ours = (matrix.double() @ torch.tensor(signal, dtype=torch.float64)).tolist()
    assert ours == pytest.approx(naive_blur_1d(signal, 1.3, 5), abs=1e-6)


def test_per_sample_sigmas_match_kornias_convolution_on_a_non_square_batch() -> None:
    torch.manual_seed(0)
    images = torch.rand(5, 3, 20, 27)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    expected = kornia.filters.gaussian_blur2d(images, (7, 7), torch.stack([sigma, sigma], 1))
    torch.testing.assert_close(gaussian_blur(images, sigma, 7), expected, atol=1e-5, rtol=0)


def test_rows_of_each_matrix_sum_to_one_so_a_flat_image_stays_flat() -> None:
    matrices = blur_matrices(torch.tensor([0.3, 2.0]), 9, 12)
    torch.testing.assert_close(matrices.sum(dim=2), torch.ones(2, 12))
    flat = torch.full((2, 3, 12, 12), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.3, 2.0]), 9), flat)


def test_unblurred_samples_come_back_bit_for_bit_and_blurred_ones_change() -> None:
    torch.manual_seed(1)
    images = torch.rand(64, 3, 16, 16)
    out = RandomGaussianBlur(kernel_size=5, sigma_range=(1.0, 2.0), p=0.5)(images)
    same = (out == images).flatten(1).all(dim=1)
    assert 16 < int(same.sum()) < 48  # about half kept, drawn per sample
    assert ((out - images).abs().flatten(1).amax(dim=1)[~same] > 1e-3).all()


def test_the_same_seed_gives_the_same_blur() -> None:
    images = torch.rand(8, 3, 16, 16)
    blur = RandomGaussianBlur(kernel_size=5, sigma_range=(0.1, 2.0), p=0.5)
    torch.manual_seed(3)
    first = blur(images)
    torch.manual_seed(3)
    assert torch.equal(blur(images), first)


def test_bf16_autocast_does_not_round_the_products() -> None:
    images = torch.rand(4, 3, 16, 16)
    sigma = torch.tensor([0.5, 1.0, 1.5, 2.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = gaussian_blur(images, sigma, 5)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, gaussian_blur(images, sigma, 5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kernel_size=4, length=10), "positive odd integer, got 4"),
        (dict(kernel_size=23, length=8), "needs images over 11 px, got 8"),
    ],
)
def test_a_kernel_that_does_not_fit_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        blur_matrices(torch.tensor([1.0]), **kwargs)

"""Training augmentation on whole batches of tensors: random crop with zero padding + flip.

The same transformation as torchvision's ``RandomCrop(size, padding)`` followed by
``RandomHorizontalFlip()`` on the stored image (the padding is pixel value 0, before
normalization), done for a batch with one gather instead of per-image PIL work.
"""

from __future__ import annotations

import torch


def crop_flip(
    pixels: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly crop each zero-padded image of a B×C×H×W batch back to H×W; mirror half of them.

    Args:
        pixels: the batch as stored (any dtype), on any device.
        padding: zeros added on every side before cropping (4 for CIFAR).
        flip: also mirror each image left-right with probability 1/2.
        generator: CPU random generator; ``None`` uses torch's global one.

    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> crop_flip(x, padding=0, flip=False).tolist()
    [[[[0.0, 1.0], [2.0, 3.0]]]]
    """
    batch, _, height, width = pixels.shape
    if batch == 0 or (padding <= 0 and not flip):
        return pixels.clone()
    if padding > 0:
        pixels = torch.nn.functional.pad(pixels, (padding, padding, padding, padding))
    top = torch.randint(2 * padding + 1, (batch,), generator=generator).to(pixels.device)
    left = torch.randint(2 * padding + 1, (batch,), generator=generator).to(pixels.device)
    mirrored = torch.rand(batch, generator=generator) < 0.5 if flip else None
    each = torch.arange(batch, device=pixels.device)
    # Sliding windows as views; one index per image picks its window (no per-image Python loop).
    rows = pixels.unfold(2, height, 1)[each, :, top]  # B×C×(W+2p)×H
    crops = rows.unfold(2, width, 1)[each, :, left]  # B×C×H×W
    if mirrored is None:
        return crops
    return torch.where(mirrored.to(pixels.device).view(-1, 1, 1, 1), crops.flip(-1), crops)

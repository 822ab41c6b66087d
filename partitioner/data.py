"""Datasets as normalised torch tensors, batched and augmented on the tensor (no loader processes:
on a 2-core machine worker processes cost more than they give for 28x28 images)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from agilenn.datasets import Split


def to_tensors(split: Split, mean: float, std: float, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    split = split.head(limit)
    images = torch.from_numpy(split.images.copy()).float().div_(255.0).sub_(mean).div_(std)
    return images, torch.from_numpy(split.labels.copy())


def augment(images: torch.Tensor, max_shift: int, flip: bool, generator: torch.Generator,
            background: float) -> torch.Tensor:
    """Random per-sample translation by up to `max_shift` pixels (padding with `background`, the
    normalised value of a black pixel) and random horizontal flips."""
    n, _, height, width = images.shape
    if max_shift:
        padded = torch.nn.functional.pad(images, [max_shift] * 4, value=background)
        dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(height))[:, :, None]  # (N, H, 1)
        cols = (dx[:, None] + torch.arange(width))[:, None, :]  # (N, 1, W)
        images = padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images.contiguous()


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled when a generator is given, in order otherwise."""
    order = torch.randperm(len(labels), generator=generator) if generator is not None else torch.arange(len(labels))
    for start in range(0, len(labels), batch_size):
        index = order[start:start + batch_size]
        yield images[index], labels[index]

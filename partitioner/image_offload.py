"""Full offload with the image itself coded as a camera would: PNG (lossless) and JPEG at a few
qualities (camera microcontrollers ship JPEG encoders). The cloud runs the unsplit reference
network on what it decodes, so a lossy setting is charged the accuracy it costs.

Pillow does the coding (the same library builds the cluttered dataset); one scheme per setting,
with the full-offload scheme's cloud layers and the median coded size as its payload.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from agilenn.datasets import Split
from agilenn.measured import Scheme

JPEG_QUALITIES = (95, 75, 50, 25)


def _pil_image(image: np.ndarray):
    from PIL import Image

    channels = image.shape[0]
    if channels == 1:
        return Image.fromarray(image[0], mode="L")
    if channels == 3:
        return Image.fromarray(np.moveaxis(image, 0, -1), mode="RGB")
    raise ValueError(f"images with {channels} channels have no PNG or JPEG form (1 or 3 channels)")


def code_image(image: np.ndarray, fmt: str, quality: int | None = None) -> tuple[bytes, np.ndarray]:
    """(coded bytes, decoded image shaped like `image`) of one uint8 (C, H, W) image."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"optimize": True} if fmt == "PNG" else {"quality": quality, "optimize": True}
    _pil_image(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format=fmt, **options)
    data = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    decoded = decoded[None] if decoded.ndim == 2 else np.moveaxis(decoded, -1, 0)
    return data, decoded


def image_offload_schemes(network: nn.Module, full_offload: Scheme, split: Split,
                          qualities: tuple[int, ...] = JPEG_QUALITIES, batch_size: int = 500) -> list[Scheme]:
    """PNG and JPEG full-offload schemes: `network` (raw pixels -> logits, the unsplit reference)
    is run on the decoded test images of `split`."""
    settings = [("png", "PNG", None)] + [(f"jpeg-q{q}", "JPEG", q) for q in qualities]
    schemes = []
    network.eval()
    for name, fmt, quality in settings:
        coded = [code_image(image, fmt, quality) for image in split.images]
        sizes = np.array([len(data) for data, _ in coded])
        decoded = np.stack([image for _, image in coded]).astype(np.float32)
        with torch.no_grad():
            logits = torch.cat([network(torch.from_numpy(decoded[s:s + batch_size]))
                                for s in range(0, len(decoded), batch_size)]).numpy()
        schemes.append(full_offload.model_copy(update={
            "name": f"full-offload-{name}", "codec": name.split("-")[0], "cut": None,
            "accuracy": float((logits.argmax(1) == split.labels).mean()),
            "payload_bytes": float(np.median(sizes)), "lossy": quality is not None, "jpeg_quality": quality}))
    return schemes

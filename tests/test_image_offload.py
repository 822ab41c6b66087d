"""Full offload with PNG and JPEG: PNG is lossless, JPEG costs bytes and accuracy in order of quality."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="measures with the reference network: needs the train extra")

from agilenn.measured import Scheme
from partitioner.image_offload import code_image, image_offload_schemes


def test_png_is_lossless_and_jpeg_is_not():
    image = np.random.default_rng(0).integers(0, 256, (1, 16, 16), dtype=np.uint8)
    _, png = code_image(image, "PNG")
    assert np.array_equal(png, image)
    small, jpeg_low = code_image(image, "JPEG", 10)
    large, jpeg_high = code_image(image, "JPEG", 95)
    assert jpeg_low.shape == image.shape and len(small) < len(large)
    assert np.abs(jpeg_high.astype(int) - image).mean() < np.abs(jpeg_low.astype(int) - image).mean()
    with pytest.raises(ValueError, match="4 channels"):
        code_image(np.zeros((4, 8, 8), dtype=np.uint8), "PNG")


def test_schemes_charge_jpeg_the_accuracy_it_costs(trained_tiny_bundle):
    import torch

    from partitioner.splits import load_reference
    from partitioner.testing import synthetic_dataset

    ref = load_reference(trained_tiny_bundle.folder / trained_tiny_bundle.manifest.files["checkpoint"])
    network = torch.nn.Sequential(*ref.modules)
    split = synthetic_dataset().test
    with torch.no_grad():
        exact = float((network(torch.from_numpy(split.images.astype(np.float32))).argmax(1).numpy()
                       == split.labels).mean())
    base = Scheme(name="full-offload", kind="full-offload", accuracy=exact, payload_bytes=100.0, device_layers=[],
                  input_bytes=256, codec="zlib-v1")
    schemes = {s.name: s for s in image_offload_schemes(network, base, split, qualities=(90, 5))}
    assert set(schemes) == {"full-offload-png", "full-offload-jpeg-q90", "full-offload-jpeg-q5"}
    png, q90, q5 = schemes["full-offload-png"], schemes["full-offload-jpeg-q90"], schemes["full-offload-jpeg-q5"]
    assert png.accuracy == exact and not png.lossy and png.jpeg_quality is None
    assert q90.lossy and q90.jpeg_quality == 90 and q5.payload_bytes < q90.payload_bytes
    assert all(s.kind == "full-offload" and s.input_bytes == 256 for s in schemes.values())

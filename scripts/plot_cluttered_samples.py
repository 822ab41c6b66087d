"""A grid of cluttered-fashion-mnist test canvases with their label names (docs/cluttered.md).

    .venv/bin/python scripts/plot_cluttered_samples.py                 # writes docs/images/cluttered-fashion-mnist.png
    AGILENN_CACHE_DIR=$(mktemp -d) .venv/bin/python scripts/plot_cluttered_samples.py --stats

The dataset is generated on the first run and cached ($AGILENN_CACHE_DIR, default ~/.cache/agilenn).
--stats also prints, as JSON, the time of the first load (a generation when the cache folder is
empty) and of a second load (from the cache), the raw bytes per canvas and the zlib (level 9)
size of the test canvases. Needs matplotlib (`pip install 'agilenn[sim]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agilenn.cluttered import ClutterSpec, load_cluttered
from agilenn.datasets import FASHION_MNIST_LABELS


def plot(images: np.ndarray, labels: np.ndarray, out: Path, rows: int, cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.4))
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(FASHION_MNIST_LABELS[label], fontsize=8)
        ax.axis("off")
    fig.suptitle(f"cluttered-fashion-mnist: test canvases 0-{rows * cols - 1} (96x96) and their labels",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, pil_kwargs={"optimize": True})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "cluttered-fashion-mnist.png")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=6)
    parser.add_argument("--stats", action="store_true", help="print load times and sizes as JSON")
    args = parser.parse_args(argv)

    spec = ClutterSpec()
    start = time.perf_counter()
    data = load_cluttered(spec)
    first_s = time.perf_counter() - start
    plot(data.test.images, data.test.labels, args.out, args.rows, args.cols)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    if args.stats:
        start = time.perf_counter()
        again = load_cluttered(spec)
        again_s = time.perf_counter() - start
        zlib9 = np.array([len(zlib.compress(c.tobytes(), 9)) for c in data.test.images])
        print(json.dumps({
            "first_load_s": round(first_s, 2), "first_load_generated": not data.from_cache,
            "second_load_s": round(again_s, 2), "second_load_from_cache": again.from_cache,
            "cache_bytes": sum(p.stat().st_size for p in again.cache_path.parent.glob(again.cache_path.stem + "*")),
            "canvases": len(data.train) + len(data.test),
            "raw_bytes_per_canvas": int(data.test.images[0].nbytes),
            "test_zlib9_bytes_median": float(np.median(zlib9)), "test_zlib9_bytes_mean": round(float(zlib9.mean()), 1),
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`agilenn evaluate BUNDLE`: a bundle's numbers, computed with ONNX Runtime and the real codec.

Accuracy and payload figures need only the device install (numpy, onnxruntime). The two
skewness figures need torch (the `train` extra); without it they are null and the report
says why.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agilenn.bundle import Bundle
from agilenn.datasets import Split
from agilenn.predict import evaluate_bundle, evaluation_split


def _skewness(bundle: Bundle, split: Split) -> dict[str, Any]:
    if not bundle.has("checkpoint"):
        return {"skewness_note": "the bundle carries no partitioner checkpoint"}
    try:
        from partitioner.analysis import measure_skewness
    except ImportError as exc:
        return {"skewness_note": f"skewness needs torch and captum: pip install 'agilenn[train]' ({exc})"}
    figures = measure_skewness(bundle.folder / bundle.manifest.files["checkpoint"], split)
    if "int8" in bundle.precisions:
        from agilenn.predict import int8_features
        from partitioner.analysis import skewness_of_features

        figures["skewness_int8"] = skewness_of_features(bundle.folder / bundle.manifest.files["checkpoint"],
                                                        int8_features(bundle, split.images), split.labels)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder (holds manifest.json)")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the one the bundle was trained on)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test samples")
    parser.add_argument("--no-skewness", action="store_true", help="skip the torch-based skewness figures")
    parser.add_argument("--precision", choices=("bundle", "integer"), default="bundle",
                        help="integer: also measure the firmware's integer-only front against the float front "
                             "(needs the 'firmware' extra)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    bundle = Bundle(args.bundle)
    dataset_name, split = evaluation_split(bundle, args.dataset, args.limit)
    report: dict[str, Any] = {"bundle": str(bundle.folder), **evaluate_bundle(bundle, split).model_dump(exclude_unset=True)}
    if args.precision == "integer":
        from firmware.evaluation import evaluate_integer

        report.update({k: v for k, v in evaluate_integer(bundle, split).items() if k != "samples"})
    if not args.no_skewness:
        report.update(_skewness(bundle, split))
    report["dataset"] = dataset_name
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

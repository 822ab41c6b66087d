"""`agilenn firmware`: the device front as integer C, built for the host or a Cortex-M7 and run there.

    agilenn firmware generate --bundle B --out DIR [--target cortex-m7] [--app harness|offload]
    agilenn firmware build    --bundle B --target host|cortex-m7 --out DIR
    agilenn firmware run      --bundle B --target host|cortex-m7 --source X.npy --sink out.jsonl [--limit N]
    agilenn firmware check    --bundle B [--target host|cortex-m7] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from agilenn.bundle import Bundle
from firmware import checks
from firmware.build import ToolchainError, build, build_offload_app
from firmware.codegen import APPS, FrontTooLargeError, generate
from firmware.integer_front import UnsupportedFrontError
from firmware.run import run_build
from firmware.targets import TARGETS, target_named


class SourceError(ValueError):
    """A source file of inputs that the front cannot take."""


def _load_source(path: Path, shape: tuple[int, int, int], limit: int | None) -> np.ndarray:
    """Raw images from a .npy file: (N, C, H, W), (N, H, W), (C, H, W) or (H, W); uint8 or floats 0..255."""
    if not path.exists():
        raise SourceError(f"source {path} does not exist")
    array = np.load(path, allow_pickle=False)
    if array.shape == shape or array.shape == shape[1:]:
        array = array[None]
    array = array.reshape(len(array), *shape) if array.shape[1:] in (shape, shape[1:]) else array
    if array.shape[1:] != shape:
        raise SourceError(f"{path}: arrays shaped {array.shape}, the bundle takes samples shaped {shape}")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255 or not np.all(array == np.round(array))):
            raise SourceError(f"{path}: values must be whole pixel levels 0..255")
        array = array.astype(np.uint8)
    return array[:limit]


def _generate(args) -> int:
    record = generate(Bundle(args.bundle), args.out, target_named(args.target), app=args.app,
                      deadline_ms=args.deadline_ms)
    print(f"wrote the C front of {record['bundle']} to {args.out}: {record['macs']} MACs, "
          f"{record['constant_bytes']} bytes of weights and tables, arena {record['arena_bytes']} bytes, "
          f"payload buffer {record['payload_capacity_bytes']} bytes")
    return 0


def _build(args) -> int:
    out = Path(args.out)
    generate(Bundle(args.bundle), out / "src", target_named(args.target), app=args.app, deadline_ms=args.deadline_ms)
    if args.app == "offload":
        if args.target != "cortex-m7":
            raise ToolchainError("the offload app runs on the cortex-m7 target (the emulated board's UARTs)")
        result = build_offload_app(out / "src", out)
    else:
        result = build(args.target, out / "src", out)
    print(f"built {result.binary}")
    return 0


def _run(args) -> int:
    bundle = Bundle(args.bundle)
    images = _load_source(Path(args.source), tuple(bundle.manifest.input.shape), args.limit)
    with tempfile.TemporaryDirectory(prefix="agilenn-firmware-") as scratch:
        record = generate(bundle, Path(scratch) / "src", target_named(args.target))
        built = build(args.target, Path(scratch) / "src", Path(scratch))
        records = run_build(built, images, record["classes"], len(record["layers"])).records
    with open(args.sink, "w") as sink:
        for index, result in enumerate(records):
            line = {"index": index, "payload": result.payload.hex(),
                    "local_logits": result.local_logits.tolist(),
                    "local_label": int(result.local_logits.argmax()),
                    "instructions": result.instructions if result.layer_instructions else None}
            sink.write(json.dumps(line) + "\n")
    print(f"{len(records)} inputs on {args.target}: results in {args.sink}")
    return 0


def _check(args) -> int:
    report = checks.check(Bundle(args.bundle), args.target, args.limit, args.dataset)
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))
    else:
        print(checks.format_report(report))
    return 0 if report["payloads_identical"] == report["samples"] == report["local_logits_identical"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn firmware", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    targets = list(TARGETS)

    generate_parser = commands.add_parser("generate", help="write the C front of a bundle")
    generate_parser.add_argument("--bundle", required=True)
    generate_parser.add_argument("--out", required=True, help="folder for the C files")
    generate_parser.add_argument("--target", choices=targets, default="cortex-m7",
                                 help="refuse a front beyond this target's flash and SRAM (default cortex-m7)")
    generate_parser.set_defaults(handler=_generate)

    build_parser = commands.add_parser("build", help="generate and compile the front with its test harness")
    build_parser.add_argument("--bundle", required=True)
    build_parser.add_argument("--target", choices=targets, required=True)
    build_parser.add_argument("--out", required=True, help="folder for the sources (src/) and the binary")
    build_parser.set_defaults(handler=_build)
    for sub in (generate_parser, build_parser):
        sub.add_argument("--app", choices=APPS, default="harness",
                         help="harness: the front alone (tests, check, run); offload: also the microcontroller's "
                              "offload loop over its UARTs (docs/serial.md)")
        sub.add_argument("--deadline-ms", type=int, default=50,
                         help="with --app offload: how long the board waits for the remote logits")

    run_parser = commands.add_parser("run", help="run the built front over a .npy file of raw images")
    run_parser.add_argument("--bundle", required=True)
    run_parser.add_argument("--target", choices=targets, default="cortex-m7")
    run_parser.add_argument("--source", required=True, help=".npy of raw uint8 images")
    run_parser.add_argument("--sink", required=True, help="JSON lines: index, payload (hex), local_logits, "
                                                          "local_label, instructions")
    run_parser.add_argument("--limit", type=int, default=None)
    run_parser.set_defaults(handler=_run)

    check_parser = commands.add_parser("check", help="compare the C front with the numpy integer reference")
    check_parser.add_argument("--bundle", required=True)
    check_parser.add_argument("--target", choices=targets, default="host")
    check_parser.add_argument("--limit", type=int, default=None, help="first N test inputs (default: all)")
    check_parser.add_argument("--dataset", default=None, help="default: the bundle's own")
    check_parser.add_argument("--json", action="store_true", help="print one JSON object")
    check_parser.add_argument("--write", default=None, metavar="FILE",
                              help="also write the report here (agilenn simulate --device-time firmware reads it)")
    check_parser.set_defaults(handler=_check)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (SourceError, UnsupportedFrontError, FrontTooLargeError, ToolchainError) as exc:
        print(f"agilenn firmware {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

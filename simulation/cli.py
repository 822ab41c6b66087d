"""`agilenn simulate`: every scheme on a modelled device and link, from measured accuracy and bytes.

    agilenn simulate --device stm32f746-216mhz --link wifi-6mbps [--json] [--report DIR]
    agilenn simulate --workload cluttered-fashion-mnist ...   # or --measured FILE; default fashion-mnist
    agilenn simulate sweep --device stm32f746-216mhz --links ble-270kbps,wifi-2mbps,wifi-6mbps --report DIR
    agilenn simulate recommend --device esp32-s3 --link ble-270kbps --min-accuracy 0.88
    agilenn simulate fleet --devices 50 --rate 20 --cloud localhost:50051 [--json]
    agilenn simulate calibrate [--write FILE]      # measure this machine's profile
    agilenn simulate profiles                      # list device and link profiles
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agilenn.cli_flags import DEFAULT_BUNDLE
from agilenn.measured import MeasuredDataError, load_measured
from simulation import compare, workloads
from simulation.profiles import ProfileError, available, load_device, load_link

COMMANDS = ("run", "sweep", "recommend", "fleet", "emulate", "calibrate", "profiles")


def _measured_options(parser: argparse.ArgumentParser) -> None:
    """--workload NAME or --measured FILE; `main` turns them into args.measured, the file to read."""
    parser.add_argument("--workload", default=None, metavar="NAME",
                        help=f"read the measured schemes of this workload ({', '.join(workloads.WORKLOADS)}; "
                             f"default {workloads.DEFAULT_WORKLOAD})")
    parser.add_argument("--measured", default=None, metavar="FILE",
                        help="read this measured-schemes file instead (python -m partitioner.simdata writes it)")


def _common(parser: argparse.ArgumentParser, link: bool = True) -> None:
    parser.add_argument("--device", default="stm32f746-216mhz", help="device profile name or YAML path")
    if link:
        parser.add_argument("--link", default="wifi-6mbps", help="link profile name or YAML path")
    parser.add_argument("--cloud", default="host", help="profile of the machine serving the remote part")
    _measured_options(parser)
    parser.add_argument("--framing", choices=compare.FRAMINGS, default="grpc",
                        help="grpc: the runtime's own messages around each payload; raw: payload bytes only")
    parser.add_argument("--logits-codec", choices=compare.LOGITS_CODECS, default="raw-f32le",
                        help="how answers carry the remote logits: float32 (default) or q8-v1 (int8 with a scale)")
    parser.add_argument("--device-time", choices=("model", "firmware"), default="model",
                        help="AgileNN's device time and memory: modelled from MACs (default), or measured on its "
                             "integer C front on an emulated Cortex-M7 (the workload's firmware costs file)")
    parser.add_argument("--cycles-per-instruction", type=float, default=None, metavar="CPI",
                        help="with --device-time firmware: cycles per instruction (default: the top of the "
                             "stated range, 2.0)")
    parser.add_argument("--confidence-threshold", type=float, default=None, metavar="T",
                        help="AgileNN's confidence gate: inputs whose local top probability reaches T are answered "
                             "on the device; each scheme then reports the share answered locally and the expected "
                             "accuracy and latency (measured per input; default: no gate)")
    parser.add_argument("--deadline-ms", type=float, default=None,
                        help="the device waits at most this long for an answer: an offload that cannot meet it is "
                             "answered locally once it has passed (default: no deadline)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agilenn simulate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="every scheme on one device and link (the default)")
    _common(run)
    run.add_argument("--report", default=None, help="write report.md and PNG plots to this folder")
    sweep = sub.add_parser("sweep", help="every scheme on several links")
    _common(sweep, link=False)
    sweep.add_argument("--links", required=True, help="comma-separated link profiles")
    sweep.add_argument("--report", default=None)
    rec = sub.add_parser("recommend", help="the fastest scheme that reaches an accuracy and fits the device, or "
                                           "AgileNN's confidence threshold for a latency budget")
    _common(rec)
    goal = rec.add_mutually_exclusive_group(required=True)
    goal.add_argument("--min-accuracy", type=float, help="the fastest scheme at this accuracy or better")
    goal.add_argument("--max-latency-ms", type=float,
                      help="AgileNN's confidence threshold with the best expected accuracy within this latency")
    fleet = sub.add_parser("fleet", help="N device agents against a running cloud service")
    fleet.add_argument("--devices", type=int, default=10)
    fleet.add_argument("--rate", type=float, default=20.0, help="inferences per second per device")
    fleet.add_argument("--cloud", required=True, help="worker address host:port")
    fleet.add_argument("--bundle", default=DEFAULT_BUNDLE)
    fleet.add_argument("--seconds", type=float, default=10.0)
    fleet.add_argument("--deadline-ms", type=float, default=200.0)
    fleet.add_argument("--confidence", type=float, default=None, help="answer locally above this confidence")
    fleet.add_argument("--connect-timeout-s", type=float, default=10.0, help="how long to wait for the streams")
    fleet.add_argument("--overload-backoff-ms", type=float, default=None,
                       help="how long a device sends nothing to a worker that answered overloaded (default: the "
                            "device's own, 100; 0: keep sending)")
    fleet.add_argument("--ca", default=None, help="PEM CA of the workers' certificates: the devices connect with TLS")
    fleet.add_argument("--cert", default=None, help="PEM client certificate, for workers that require one")
    fleet.add_argument("--key", default=None, help="PEM private key of --cert")
    fleet.add_argument("--token-file", default=None, help="file holding the devices' token")
    fleet.add_argument("--report", default=None)
    fleet.add_argument("--json", action="store_true")
    emu = sub.add_parser("emulate", help="modelled vs measured latency over emulated links (needs root)")
    emu.add_argument("--bundle", default=DEFAULT_BUNDLE)
    emu.add_argument("--links", default="wifi-6mbps,ble-270kbps")
    _measured_options(emu)
    emu.add_argument("--cloud", default="host")
    emu.add_argument("--count", type=int, default=60, help="timed inferences per link")
    emu.add_argument("--json", action="store_true")
    cal = sub.add_parser("calibrate", help="measure this machine's compute profile")
    _measured_options(cal)
    cal.add_argument("--repeats", type=int, default=300)
    cal.add_argument("--write", default=None, help="write the profile YAML here")
    cal.add_argument("--json", action="store_true")
    sub.add_parser("profiles", help="list the built-in profiles")
    return parser


def _fmt_row(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    fits = "yes" if s["fits_device"] else "NO"
    return (f"{s['name']:<13} {s['accuracy']:>6.4f} {s['device_macs']:>9,} {s['payload_bytes']:>7.1f} "
            f"{lat['device_ms']:>8.2f} {lat['encode_ms']:>7.2f} {lat['network_ms']:>8.2f} {lat['cloud_ms']:>6.2f} "
            f"{lat['return_ms']:>7.2f} {lat['total_ms']:>8.2f} {s['energy_mj']:>9.2f} {fits:>4}")


HEADER = (f"{'scheme':<13} {'acc':>6} {'dev MACs':>9} {'bytes':>7} {'device':>8} {'encode':>7} {'network':>8} "
          f"{'cloud':>6} {'return':>7} {'total':>8} {'energy mJ':>9} {'fits':>4}")


def print_result(result: dict[str, Any]) -> None:
    print(f"{result['dataset']} ({result['samples']} test samples) on {result['device']} over {result['link']}, "
          f"cloud {result['cloud']}, framing {result['framing']}; latency in ms")
    print(HEADER)
    for s in result["schemes"]:
        print(_fmt_row(s))
    if result.get("confidence_threshold") is not None or result.get("deadline_ms") is not None:
        print(f"with the confidence gate at {result.get('confidence_threshold')} and a deadline of "
              f"{result.get('deadline_ms')} ms: share answered on the device, expected accuracy, expected latency")
        for s in result["schemes"]:
            if "policy" in s:
                p = s["policy"]
                print(f"  {s['name']:<13} {p['locally_answered_share']:>6.1%} {p['expected_accuracy']:>7.4f} "
                      f"{p['expected_latency_ms']:>9.2f}" + ("  (answers miss the deadline)"
                                                           if p["answers_in_time"] is False else ""))
    notes = [f"  {s['name']}: {s['note']}" for s in result["schemes"] if s["note"]]
    if notes:
        print("notes:\n" + "\n".join(notes))
    print("summary (baseline / AgileNN; larger favours AgileNN):")
    for key, value in result["summary"].items():
        if key == "crossover_detail":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {'-' if v is None else f'{v:,.0f}'}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.2f}"
        print(f"  {key}: {value}")
    for name, detail in result["summary"].get("crossover_detail", {}).items():
        if detail["kbps"] is None:
            print(f"  AgileNN vs {name}: faster {detail['agilenn_faster']} between "
                  f"{detail['range_kbps'][0]:g} and {detail['range_kbps'][1]:g} kbps")


def _profiles(args) -> tuple:
    return load_device(args.device), load_device(args.cloud)


def _firmware(args, device, measured):
    """AgileNN's device part measured on firmware, when --device-time firmware asks for it."""
    if args.device_time != "firmware":
        return None
    from simulation.firmware_time import measured_device

    agilenn = next((s for s in measured.schemes if s.kind == "agilenn"), None)
    return measured_device(workloads.get(args.workload or workloads.DEFAULT_WORKLOAD).firmware, device,
                           args.cycles_per_instruction, agilenn.bundle_hash if agilenn else None)


def _simulate(args, link_names: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    """One result per link, and the report's path when --report asked for one."""
    measured = compare.with_logits_codec(load_measured(args.measured), args.logits_codec)
    device, cloud = _profiles(args)
    firmware = _firmware(args, device, measured)
    links = [load_link(name) for name in link_names]
    results = [compare.simulate(measured, device, link, cloud, args.framing, firmware, args.confidence_threshold,
                                args.deadline_ms) for link in links]
    if not args.report:
        return results, None
    from simulation.report import write_report

    return results, str(write_report(Path(args.report), measured, results, links, device, cloud, args.framing))


def _print_results(results: list[dict[str, Any]], report: str | None) -> None:
    for i, result in enumerate(results):
        if i:
            print()
        print_result(result)
    if report:
        print(f"report: {report}")


def cmd_run(args) -> int:
    (result,), report = _simulate(args, [args.link])
    if report:
        result["report"] = report
    if args.json:
        print(json.dumps(result))
    else:
        _print_results([result], report)
    return 0


def cmd_sweep(args) -> int:
    names = [name.strip() for name in args.links.split(",") if name.strip()]
    if not names:
        print("agilenn simulate sweep: --links names no link (comma-separated profile names)", file=sys.stderr)
        return 2
    results, report = _simulate(args, names)
    out: dict[str, Any] = {"device": results[0]["device"], "runs": results}
    if report:
        out["report"] = report
    if args.json:
        print(json.dumps(out))
    else:
        _print_results(results, report)
    return 0


def cmd_recommend(args) -> int:
    measured = compare.with_logits_codec(load_measured(args.measured), args.logits_codec)
    device, cloud = _profiles(args)
    if args.max_latency_ms is not None:
        return _recommend_threshold(args, measured, device, cloud)
    result = compare.recommend(measured, device, load_link(args.link), cloud, args.min_accuracy, args.framing)
    if args.json:
        print(json.dumps(result))
        return 0 if result["recommended"] else 1
    print(f"on {result['device']} over {result['link']} with accuracy >= {result['min_accuracy']}:")
    print(f"  recommended: {result['reason']}")
    print(HEADER + "  why not")
    for row in result["candidates"]:
        print(_fmt_row(row) + ("  " + "; ".join(row["why_not"]) if row["why_not"] else "  eligible"))
    return 0 if result["recommended"] else 1


def _recommend_threshold(args, measured, device, cloud) -> int:
    from simulation.gate import recommend_threshold

    link = load_link(args.link)
    result = compare.simulate(measured, device, link, cloud, args.framing, _firmware(args, device, measured))
    agilenn = next(row for row in result["schemes"] if row["kind"] == "agilenn")
    choice = recommend_threshold(measured.scheme("agilenn"), agilenn, args.max_latency_ms, args.deadline_ms)
    choice.update(device=device.name, link=link.name)
    if args.json:
        print(json.dumps(choice))
    else:
        print(f"AgileNN on {device.name} over {link.name} within {args.max_latency_ms:g} ms: {choice['reason']}")
    return 0 if choice["recommended"] else 1


def cmd_fleet(args) -> int:
    from simulation.fleet import run_fleet

    result = run_fleet(args.bundle, args.cloud, devices=args.devices, rate_hz=args.rate, seconds=args.seconds,
                       deadline_ms=args.deadline_ms, confidence=args.confidence,
                       report=Path(args.report) if args.report else None,
                       connect_timeout_s=args.connect_timeout_s, overload_backoff_ms=args.overload_backoff_ms,
                       security={field: value for field, value in (("ca_file", args.ca), ("cert_file", args.cert),
                                                                   ("key_file", args.key),
                                                                   ("token_file", args.token_file)) if value})
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


def cmd_emulate(args) -> int:
    from simulation.emulate import EmulationUnavailable, run

    try:
        result = run(args.bundle, load_measured(args.measured),
                     [name.strip() for name in args.links.split(",") if name.strip()], args.cloud, args.count)
    except EmulationUnavailable as exc:
        print(f"agilenn simulate emulate: cannot emulate here: {exc}", file=sys.stderr)
        return 4
    if args.json:
        print(json.dumps(result))
        return 0
    for r in result["links"] + [result["zero_link"]]:
        print(f"{r['link']:<12} {r['mode']:<8} measured {r['measured_total_ms']:7.2f} ms end to end (median of "
              f"{r['inferences']}), modelled {r['modelled_total_ms']:7.2f} ms ({r['total_error']:+.1%}); round trip "
              f"measured {r['measured_round_trip_ms']:.2f} ms, modelled {r['modelled_round_trip_ms']:.2f} ms"
              + (f"; the link's share: measured {r['measured_link_ms']:.2f} ms, modelled {r['modelled_link_ms']:.2f} ms "
                 f"({r['link_error']:+.1%})" if "link_error" in r else ""))
    for r in result["links"]:
        print(f"{r['link']:<12} {r['mode']:<8} with the worker's round trip from the zero link: modelled "
              f"{r['modelled_total_same_run_cloud_ms']:7.2f} ms ({r['total_error_same_run_cloud']:+.1%})")

    def verdict(key: str) -> str:
        return "within" if result[key] else "NOT within"
    print(f"paced, end to end: {verdict('within_15_percent')} 15% on every link with the host profile's cloud, "
          f"{verdict('within_15_percent_same_run_cloud')} with the zero link's; the links' share over the zero "
          f"link: {verdict('link_within_15_percent')} 15%")
    return 0


def cmd_calibrate(args) -> int:
    from simulation.calibrate import calibrate, profile_yaml

    result = calibrate(load_measured(args.measured), args.repeats)
    text = profile_yaml(result, "agilenn simulate " + " ".join(a for a in args.argv if a != "--json"))
    if args.write:
        Path(args.write).write_text(text)
    print(json.dumps(result) if args.json else text)
    return 0


def cmd_profiles(args) -> int:
    for kind in ("device", "link"):
        print(f"{kind} profiles:")
        for name in available(kind):
            profile = load_device(name) if kind == "device" else load_link(name)
            print(f"  {name:<18} [{profile.calibration}] {profile.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["run", *argv]
    args = _parser().parse_args(argv)
    args.argv = argv  # what calibrate records as its command; sys.argv is another program's in-process
    from firmware.report import FirmwareReportError
    from simulation.calibrate import CalibrationError
    from simulation.firmware_time import FirmwareTimeError
    from simulation.plotting import ReportUnavailable

    try:
        if hasattr(args, "measured"):  # the subcommands that read measured schemes
            args.measured = str(workloads.measured_file(args.workload, args.measured))
        return globals()[f"cmd_{args.command}"](args)
    except workloads.WorkloadError as exc:  # a usage error, as argparse's are
        print(f"agilenn simulate: error: {exc}", file=sys.stderr)
        return 2
    except (ProfileError, MeasuredDataError, ReportUnavailable, CalibrationError, FirmwareReportError,
            FirmwareTimeError) as exc:
        print(f"agilenn simulate: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

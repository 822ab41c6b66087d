"""Every measured scheme on one device and link: latency by parts, energy, memory, and the
summary ratios against AgileNN (each baseline / AgileNN, so larger favours AgileNN).

The measured schemes come from a JSON file written by `python -m partitioner.simdata`
(accuracy and real encoded bytes from the exported bundles, per-layer tables; its form is
`agilenn.measured.MeasuredSchemes`); this module only reads it, so a simulation needs neither
torch nor the models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from agilenn.measured import CutRecord, LayerRow, MeasuredSchemes, ProtocolOverheads, Scheme
from simulation.cuts import Cut, NoEligibleCut, choose_cut
from simulation.model import Latency, Layer, MeasuredDevice, Workload, energy_mj, latency, memory
from simulation.profiles import DeviceProfile, LinkProfile
from simulation.workloads import DEFAULT_WORKLOAD, WORKLOADS

DEFAULT_MEASURED = WORKLOADS[DEFAULT_WORKLOAD].measured
OFFLOADING_BASELINES = ("full-offload", "layer-split", "deepcod")
FRAMINGS = ("grpc", "raw")
SWEEP_KBPS = (10.0, 1e7)  # crossover search range


LOGITS_CODECS = ("raw-f32le", "q8-v1")


def with_logits_codec(measured: MeasuredSchemes, codec: str) -> MeasuredSchemes:
    """`measured` with its answers' logits in `codec`: q8-v1 carries a float32 scale and one byte a class
    instead of four (the Tensor's length prefix stays one byte below 128 bytes of logits)."""
    if codec not in LOGITS_CODECS:
        raise ValueError(f"logits codec {codec!r}; choose one of {', '.join(LOGITS_CODECS)}")
    if codec == "raw-f32le":
        return measured
    raw = 4 + measured.classes
    saved = measured.protocol.raw_response_bytes - raw
    protocol = measured.protocol.model_copy(update={"raw_response_bytes": raw,
                                                    "response_bytes": measured.protocol.response_bytes - saved})
    return measured.model_copy(update={"protocol": protocol})


def _layers(rows: list[LayerRow]) -> tuple[Layer, ...]:
    return tuple(Layer(**row.model_dump()) for row in rows)


def _workload(name: str, device_layers: list[LayerRow], cloud_layers: list[LayerRow], input_bytes: int,
              encode_symbols: int, payload_bytes: float, protocol: ProtocolOverheads, framing: str,
              device_weight_bytes: int | None = None) -> Workload:
    if framing not in FRAMINGS:
        raise ValueError(f"framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    offloads = payload_bytes > 0
    grpc = framing == "grpc"
    return Workload(
        name=name,
        device_layers=_layers(device_layers),
        input_bytes=input_bytes,
        encode_symbols=encode_symbols if offloads else 0,
        payload_bytes=payload_bytes,
        request_overhead_bytes=protocol.request_overhead_bytes if (offloads and grpc) else 0,
        response_bytes=(protocol.response_bytes if grpc else protocol.raw_response_bytes) if offloads else 0,
        cloud_layers=_layers(cloud_layers),
        device_weight_bytes=device_weight_bytes,
    )


def workload(scheme: Scheme, protocol: ProtocolOverheads, framing: str = "grpc",
             payload_bytes: float | None = None, firmware: MeasuredDevice | None = None) -> Workload:
    """One scheme's workload; `payload_bytes` replaces the measured median (the emulation's own), and
    `firmware`, when given, AgileNN's modelled device part (its time and memory measured on firmware)."""
    work = _workload(scheme.name, scheme.device_layers, scheme.cloud_layers, scheme.input_bytes,
                     scheme.encode_symbols, scheme.payload_bytes if payload_bytes is None else payload_bytes,
                     protocol, framing, scheme.device_weight_bytes)
    if firmware is not None and scheme.kind == "agilenn":
        work = replace(work, measured_device=firmware)
    return work


def cut_workload(cut: CutRecord, protocol: ProtocolOverheads, framing: str = "grpc") -> Workload:
    """The split at one measured cut (input_bytes 0: the device layers before an interior cut read
    the sample, so their peak SRAM already holds it)."""
    return _workload(cut.name, cut.device_layers, cut.cloud_layers, 0, cut.encode_symbols,
                     cut.payload_bytes_median, protocol, framing)


@dataclass
class SchemeResult:
    name: str
    kind: str
    accuracy: float
    workload: Workload
    latency: Latency
    energy_mj: float
    sram_bytes: int
    flash_bytes: int
    fits_device: bool
    note: str = ""
    lossy: bool = False  # a full offload whose coder loses information (JPEG)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "accuracy": self.accuracy,
                "device_macs": self.workload.device_macs, "payload_bytes": self.workload.payload_bytes,
                "latency_ms": self.latency.to_json(), "energy_mj": self.energy_mj,
                "sram_bytes": self.sram_bytes, "flash_bytes": self.flash_bytes, "fits_device": self.fits_device,
                "note": self.note, "lossy": self.lossy}


def _result(name: str, kind: str, accuracy: float, work: Workload, device: DeviceProfile, link: LinkProfile,
            cloud: DeviceProfile, note: str = "", lossy: bool = False) -> SchemeResult:
    lat = latency(work, device, link, cloud)
    mem = memory(work, device)
    if not mem.fits:
        note = "; ".join(filter(None, [note, "does not fit: " + ", ".join(mem.why_not)]))
    return SchemeResult(name, kind, accuracy, work, lat, energy_mj(lat, device),
                        mem.sram_bytes, mem.flash_bytes, mem.fits, note, lossy)


def _split_result(cut: CutRecord, work: Workload, device: DeviceProfile, link: LinkProfile,
                  cloud: DeviceProfile, note: str) -> SchemeResult:
    """The layer-split scheme at the measured cut `cut`."""
    return _result("layer-split", "layer-split", cut.accuracy, work, device, link, cloud, note)


def split_cuts(measured: MeasuredSchemes, framing: str = "grpc") -> list[Cut]:
    """The interior cuts of the reference network (neither the raw input nor the logits)."""
    return [Cut(c.name, cut_workload(c, measured.protocol, framing), c.accuracy)
            for c in measured.cuts if c.name not in ("input", "logits")]


def evaluate(measured: MeasuredSchemes, device: DeviceProfile, link: LinkProfile, cloud: DeviceProfile,
             framing: str = "grpc", firmware: MeasuredDevice | None = None) -> list[SchemeResult]:
    results = []
    for scheme in measured.schemes:
        note = f"variant {scheme.variant}" if scheme.variant else ""
        if scheme.cut:
            note = f"reference network cut at '{scheme.cut}'"
        if scheme.jpeg_quality is not None:
            note = "; ".join(filter(None, [note, f"JPEG quality {scheme.jpeg_quality}"]))
        if firmware is not None and scheme.kind == "agilenn":
            note = "; ".join(filter(None, [note, firmware.source]))
        results.append(_result(scheme.name, scheme.kind, scheme.accuracy,
                               workload(scheme, measured.protocol, framing, firmware=firmware),
                               device, link, cloud, note, scheme.lossy))
    try:
        choice = choose_cut(split_cuts(measured, framing), device, link, cloud)
    except NoEligibleCut as exc:
        choice = None
        results.append(SchemeResult("layer-split", "layer-split", float("nan"), Workload("layer-split"),
                                    Latency(0, 0, 0, 0, 0), float("nan"), 0, 0, False, str(exc)))
    if choice is not None:
        cut = measured.cut(choice.cut.name)
        results.append(_split_result(cut, choice.cut.workload, device, link, cloud,
                                     f"best cut for this device and link: after '{cut.name}', "
                                     f"{cut.codec}-coded 8-bit activation {cut.activation_shape}"))
    order = {"agilenn": 0, "local-only": 1, "full-offload": 2, "layer-split": 3, "deepcod": 4}
    results.sort(key=lambda r: (order.get(r.kind, 9), r.workload.device_macs))
    return results


def _by_name(results: Iterable[SchemeResult]) -> dict[str, SchemeResult]:
    return {r.name: r for r in results}


def nearest_local(results: list[SchemeResult]) -> SchemeResult | None:
    agile = next(r for r in results if r.kind == "agilenn")
    local = [r for r in results if r.kind == "local-only"]
    return min(local, key=lambda r: (abs(r.accuracy - agile.accuracy), r.latency.total_ms)) if local else None


def latency_at(measured: MeasuredSchemes, name: str, device: DeviceProfile, link: LinkProfile,
               cloud: DeviceProfile, framing: str, firmware: MeasuredDevice | None = None) -> float:
    """One scheme's total latency; the layer split re-chooses its cut for this link."""
    if name == "layer-split":
        return choose_cut(split_cuts(measured, framing), device, link, cloud).latency.total_ms
    scheme = next(s for s in measured.schemes if s.name == name)
    return latency(workload(scheme, measured.protocol, framing, firmware=firmware), device, link, cloud).total_ms


def crossover(measured: MeasuredSchemes, baseline: str, device: DeviceProfile, link: LinkProfile,
              cloud: DeviceProfile, framing: str = "grpc", points: int = 121,
              firmware: MeasuredDevice | None = None) -> dict[str, Any]:
    """The uplink rate below which AgileNN answers faster than `baseline` (same RTT, loss, packets).

    Scans a log grid of rates, then bisects the highest rate where the sign flips."""
    lo, hi = (math.log10(k * 1e3) for k in SWEEP_KBPS)
    rates = [10 ** (lo + (hi - lo) * i / (points - 1)) for i in range(points)]

    def gap(rate: float) -> float:  # > 0: AgileNN faster
        at = link.with_rate(rate)
        return (latency_at(measured, baseline, device, at, cloud, framing, firmware)
                - latency_at(measured, "agilenn", device, at, cloud, framing, firmware))

    gaps = [gap(r) for r in rates]
    if all(g > 0 for g in gaps):
        return {"kbps": None, "agilenn_faster": "at every rate", "range_kbps": list(SWEEP_KBPS)}
    if all(g <= 0 for g in gaps):
        return {"kbps": None, "agilenn_faster": "at no rate", "range_kbps": list(SWEEP_KBPS)}
    # the highest flip from faster (below) to not faster (above)
    i = max(j for j in range(points - 1) if gaps[j] > 0 >= gaps[j + 1])
    a, b = rates[i], rates[i + 1]
    for _ in range(40):
        mid = math.sqrt(a * b)
        a, b = (mid, b) if gap(mid) > 0 else (a, mid)
    also_above = any(g > 0 for g in gaps[i + 1:])
    return {"kbps": a / 1e3, "agilenn_faster": "below" + (" (and again at some higher rates)" if also_above else ""),
            "range_kbps": list(SWEEP_KBPS)}


def _ratio(baseline: float, agilenn: float) -> float | None:
    return baseline / agilenn if agilenn else None


def local_only_compared(results: list[SchemeResult]) -> tuple[SchemeResult | None, bool]:
    """The local-only model AgileNN is compared with, and whether it reaches AgileNN's accuracy: the
    fastest local-only scheme whose accuracy is at least AgileNN's, else the most accurate one (None
    without any local-only scheme). local-large, the reference network whole on the device (its cut at
    `logits`), is of kind local-only and so one of them."""
    agile = next(r for r in results if r.kind == "agilenn")
    local = [r for r in results if r.kind == "local-only"]
    if not local:
        return None, False
    as_good = [r for r in local if r.accuracy >= agile.accuracy]
    if as_good:
        return min(as_good, key=lambda r: (r.latency.total_ms, -r.accuracy, r.name)), True
    return max(local, key=lambda r: (r.accuracy, -r.latency.total_ms)), False


def comparison_figures(results: list[SchemeResult]) -> dict[str, Any]:
    """The summary's figures against local-only and full offload; each is baseline / AgileNN, so
    larger favours AgileNN.

    - `speedup_vs_local_only`: end-to-end latency of `local_only_compared` / AgileNN's. That model is
      the fastest local-only scheme whose accuracy is at least AgileNN's
      (`local_only_reaches_agilenn_accuracy` true) or, when none reaches it, the most accurate one
      (false); `speedup_vs_local_only_note` says which, `local_only_compared_fits_device` whether it fits.
    - `device_macs_ratio_vs_local_only`, `energy_ratio_vs_local_only`: that same model's device MACs
      and energy / AgileNN's.
    - `bytes_ratio_vs_full_offload`, `speedup_vs_full_offload`: payload bytes and latency of
      `full_offload_compared`, the lossless full-offload scheme (`lossy` false) with the fewest payload
      bytes, / AgileNN's. No accuracy condition: a lossless coder keeps the reference network's.
    - `bytes_ratio_vs_jpeg`: payload bytes of `jpeg_compared`, the lossy full-offload scheme with the
      fewest payload bytes among those whose accuracy is at least AgileNN's, / AgileNN's; null (and
      `jpeg_compared` null) when there is none, `bytes_ratio_vs_jpeg_note` saying why.

    The local-only keys are absent without a local-only scheme, the full-offload ones without a
    lossless full offload; the JPEG keys are always there.
    """
    agile = next(r for r in results if r.kind == "agilenn")
    out: dict[str, Any] = {}
    local, reaches = local_only_compared(results)
    if local is not None:
        out["local_only_compared"] = local.name
        out["local_only_compared_fits_device"] = local.fits_device
        out["local_only_reaches_agilenn_accuracy"] = reaches
        out["speedup_vs_local_only"] = _ratio(local.latency.total_ms, agile.latency.total_ms)
        out["speedup_vs_local_only_note"] = (
            f"{local.name} is the fastest local-only scheme at AgileNN's accuracy ({agile.accuracy:.4f}) or better"
            if reaches else f"no local-only scheme reaches AgileNN's accuracy ({agile.accuracy:.4f}); compared "
                            f"with the most accurate one, {local.name} ({local.accuracy:.4f})")
        out["device_macs_ratio_vs_local_only"] = _ratio(local.workload.device_macs, agile.workload.device_macs)
        out["energy_ratio_vs_local_only"] = _ratio(local.energy_mj, agile.energy_mj)
    full = [r for r in results if r.kind == "full-offload"]
    lossless = [r for r in full if not r.lossy and r.workload.payload_bytes > 0]
    if lossless:
        best = min(lossless, key=lambda r: (r.workload.payload_bytes, r.name))
        out["full_offload_compared"] = best.name
        out["bytes_ratio_vs_full_offload"] = _ratio(best.workload.payload_bytes, agile.workload.payload_bytes)
        out["speedup_vs_full_offload"] = _ratio(best.latency.total_ms, agile.latency.total_ms)
    lossy = [r for r in full if r.lossy]
    as_good = [r for r in lossy if r.accuracy >= agile.accuracy]
    jpeg = min(as_good, key=lambda r: (r.workload.payload_bytes, -r.accuracy, r.name)) if as_good else None
    out["jpeg_compared"] = None if jpeg is None else jpeg.name
    out["bytes_ratio_vs_jpeg"] = None if jpeg is None else _ratio(jpeg.workload.payload_bytes,
                                                                   agile.workload.payload_bytes)
    out["bytes_ratio_vs_jpeg_note"] = (
        f"{jpeg.name} is the lossy full offload with the fewest bytes at AgileNN's accuracy or better" if jpeg
        else f"no lossy full-offload scheme reaches AgileNN's accuracy ({agile.accuracy:.4f})" if lossy
        else "no lossy full-offload scheme was measured")
    return out


def summary(measured: MeasuredSchemes, results: list[SchemeResult], device: DeviceProfile, link: LinkProfile,
            cloud: DeviceProfile, framing: str = "grpc", firmware: MeasuredDevice | None = None) -> dict[str, Any]:
    named = _by_name(results)
    agile = named["agilenn"]
    out: dict[str, Any] = {}
    nearest = nearest_local(results)
    if nearest is not None:
        out["local_only_nearest"] = nearest.name  # nearest in accuracy; the ratios are against local_only_compared
    out.update(comparison_figures(results))
    local, _ = local_only_compared(results)
    if local is not None and device.compute.dense_macs_per_s is not None:
        # sensitivity: one MAC rate for every layer
        single = device.model_copy(update={"compute": device.compute.model_copy(update={"dense_macs_per_s": None})})
        agile_single = latency(agile.workload, single, link, cloud).total_ms
        out["speedup_vs_local_only_single_rate"] = latency(local.workload, single, link, cloud).total_ms / agile_single
    for name in OFFLOADING_BASELINES:
        if name != "full-offload" and name in named and named[name].workload.payload_bytes:
            key = name.replace("-", "_")
            out[f"bytes_ratio_vs_{key}"] = named[name].workload.payload_bytes / agile.workload.payload_bytes
            out[f"speedup_vs_{key}"] = named[name].latency.total_ms / agile.latency.total_ms
    out["crossover_kbps"] = {}
    out["crossover_detail"] = {}
    for name in OFFLOADING_BASELINES:
        if name in named and named[name].fits_device and not math.isnan(named[name].accuracy):
            detail = crossover(measured, name, device, link, cloud, framing, firmware=firmware)
            out["crossover_kbps"][name] = detail["kbps"]
            out["crossover_detail"][name] = detail
    return out


def simulate(measured: MeasuredSchemes, device: DeviceProfile, link: LinkProfile, cloud: DeviceProfile,
             framing: str = "grpc", firmware: MeasuredDevice | None = None,
             confidence_threshold: float | None = None, deadline_ms: float | None = None) -> dict[str, Any]:
    """Every scheme's figures; each also under `policy`: the share answered on the device, the expected
    accuracy and latency with the confidence gate at `confidence_threshold` (None: every input offloaded)
    and the device waiting at most `deadline_ms` (simulation.gate)."""
    from simulation.gate import expected

    results = evaluate(measured, device, link, cloud, framing, firmware)
    schemes = {s.name: s for s in measured.schemes}
    rows = []
    for r in results:
        row = r.to_json()
        if r.name in schemes and not math.isnan(r.accuracy):
            row["policy"] = expected(schemes[r.name], row, confidence_threshold, deadline_ms)
        rows.append(row)
    return {"device": device.name, "link": link.name, "cloud": cloud.name, "framing": framing,
            "device_time": "firmware" if firmware else "model",
            "dataset": measured.dataset, "samples": measured.samples,
            "confidence_threshold": confidence_threshold, "deadline_ms": deadline_ms,
            "schemes": rows,
            "summary": summary(measured, results, device, link, cloud, framing, firmware)}


def recommend(measured: MeasuredSchemes, device: DeviceProfile, link: LinkProfile, cloud: DeviceProfile,
              min_accuracy: float, framing: str = "grpc") -> dict[str, Any]:
    """The fastest scheme that fits the device and reaches `min_accuracy`, with the candidates."""
    results = evaluate(measured, device, link, cloud, framing)
    # the layer split may meet the floor at another cut than the fastest one
    try:
        floor_choice = choose_cut(split_cuts(measured, framing), device, link, cloud, min_accuracy=min_accuracy)
    except NoEligibleCut:
        floor_choice = None
    rows = []
    for r in results:
        if r.kind == "layer-split" and floor_choice is not None and r.accuracy < min_accuracy:
            cut = measured.cut(floor_choice.cut.name)
            r = _split_result(cut, floor_choice.cut.workload, device, link, cloud, f"cut after '{cut.name}'")
        reasons = []
        if math.isnan(r.accuracy) or r.accuracy < min_accuracy:
            reasons.append(f"accuracy {r.accuracy:.4f} < {min_accuracy}")
        if not r.fits_device:
            reasons.append("does not fit the device")
        rows.append({**r.to_json(), "eligible": not reasons, "why_not": reasons})
    eligible = [row for row in rows if row["eligible"]]
    best = min(eligible, key=lambda row: (row["latency_ms"]["total_ms"], -row["accuracy"])) if eligible else None
    return {"device": device.name, "link": link.name, "min_accuracy": min_accuracy,
            "recommended": None if best is None else best["name"],
            "reason": (f"{best['name']}: {best['latency_ms']['total_ms']:.2f} ms, accuracy {best['accuracy']:.4f}, "
                       f"fits the device" if best else "no scheme meets the accuracy floor and fits the device"),
            "candidates": sorted(rows, key=lambda row: (not row["eligible"], row["latency_ms"]["total_ms"]))}

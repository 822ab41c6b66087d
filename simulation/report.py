"""A markdown report with PNG plots (matplotlib, Agg backend) of one or more simulation runs.

Plots: latency breakdown per scheme (like the paper's Fig. 16), accuracy vs bytes per
inference for AgileNN and the DeepCOD-like variants (like Fig. 17), and latency vs uplink
rate with the crossover rates marked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from agilenn.measured import MeasuredSchemes, TradeoffPoint
from simulation import compare
from simulation.plotting import pyplot
from simulation.profiles import DeviceProfile, LinkProfile

PARTS = ("device_ms", "encode_ms", "network_ms", "cloud_ms", "return_ms")
PART_LABELS = ("device compute", "encoding", "network (up)", "cloud", "return (down)")
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")


def _plain_log_ticks(axis) -> None:
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def plot_breakdown(runs: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.2), squeeze=False)
    for ax, run in zip(axes[0], runs):
        schemes = [s for s in run["schemes"] if not math.isnan(s["accuracy"])]
        names = [s["name"] + ("" if s["fits_device"] else "\n(does not fit)") for s in schemes]
        bottom = [0.0] * len(schemes)
        for part, label, colour in zip(PARTS, PART_LABELS, COLOURS):
            values = [s["latency_ms"][part] for s in schemes]
            ax.barh(names, values, left=bottom, label=label, color=colour)
            bottom = [b + v for b, v in zip(bottom, values)]
        for y, (total, s) in enumerate(zip(bottom, schemes)):
            ax.text(total, y, f" {total:.1f} ms, {s['accuracy'] * 100:.1f}%", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(bottom) * 1.45)
        ax.set_xlabel("modelled latency per inference (ms)")
        ax.set_title(f"{run['device']} over {run['link']}", fontsize=10)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _bits(point: TradeoffPoint) -> str:
    bits = str(math.ceil(math.log2(point.levels)))
    return bits + (", fixed centroids" if point.fixed_centroids else "")


def _frontier(points: list[TradeoffPoint]) -> list[TradeoffPoint]:
    """The points no cheaper point matches in accuracy, by bytes."""
    best, out = -1.0, []
    for p in sorted(points, key=lambda p: (p.payload_bytes, -p.accuracy)):
        if p.accuracy > best:
            out.append(p)
            best = p.accuracy
    return out


def plot_tradeoff(measured: MeasuredSchemes, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    markers = {"agilenn": ("o", "#c44e52"), "deepcod": ("s", "#4c72b0")}
    bundled = {s.variant or s.name for s in measured.schemes}
    for family, (marker, colour) in markers.items():
        points = sorted((p for p in measured.tradeoff if p.family == family), key=lambda p: p.payload_bytes)
        if not points:
            continue
        label = "AgileNN" if family == "agilenn" else "DeepCOD-like"
        ax.scatter([p.payload_bytes for p in points], [p.accuracy * 100 for p in points], marker=marker,
                   color=colour, zorder=3)
        frontier = _frontier(points)  # each step: more bytes buy more accuracy
        ax.plot([p.payload_bytes for p in frontier], [p.accuracy * 100 for p in frontier], color=colour,
                label=f"{label} (line: best accuracy for the bytes)")
        alt = [(b, p.accuracy * 100) for p in points for b in p.alternatives.values()]
        if alt:
            ax.scatter([a[0] for a in alt], [a[1] for a in alt], marker=marker, facecolors="none", edgecolors=colour,
                       label=f"{label}, bit-packed / zlib")
        for i, p in enumerate(points):
            text = f"{p.offloaded_channels}ch x {_bits(p)}b"
            if p.name in bundled:
                text += " (in the table)"
            twin = i > 0 and points[i - 1].payload_bytes == p.payload_bytes  # same bytes: label on the left
            ax.annotate(text, (p.payload_bytes, p.accuracy * 100), fontsize=7, textcoords="offset points",
                        xytext=(-5, -3) if twin else (5, 4 if i % 2 == 0 else -10), ha="right" if twin else "left")
    for s in measured.schemes:
        if s.kind == "full-offload":
            ax.axvline(s.payload_bytes, color="grey", linestyle=":", label=f"full offload ({s.payload_bytes:.0f} B)")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("bytes per inference (median, real encoded payload)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy vs bytes, {measured.dataset}", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bandwidth(measured: MeasuredSchemes, run: dict[str, Any], link: LinkProfile, device: DeviceProfile,
                   cloud: DeviceProfile, framing: str, path: Path, points: int = 60) -> Path:
    plt = pyplot()
    lo, hi = math.log10(50e3), math.log10(100e6)
    rates = [10 ** (lo + (hi - lo) * i / (points - 1)) for i in range(points)]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    others = iter(["#4c72b0", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"])
    for s in run["schemes"]:
        if math.isnan(s["accuracy"]):
            continue
        ys = [compare.latency_at(measured, s["name"], device, link.with_rate(r), cloud, framing) for r in rates]
        style = ({"linewidth": 2.5, "color": "#c44e52"} if s["kind"] == "agilenn"
                 else {"linewidth": 1.2, "color": next(others, "black"),
                       "linestyle": "--" if s["kind"] == "local-only" else "-"})
        ax.plot([r / 1e3 for r in rates], ys, label=f"{s['name']} ({s['accuracy'] * 100:.1f}%)", **style)
    for name, kbps in run["summary"].get("crossover_kbps", {}).items():
        if kbps is not None:
            ax.axvline(kbps, color="grey", linestyle=":", linewidth=1)
            ax.text(kbps, 1.0, f" {name}\n {kbps:,.0f} kbps", fontsize=7,
                    rotation=90, va="top", transform=ax.get_xaxis_transform())
    ax.axvline(link.uplink_bps / 1e3, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"uplink rate (kbps); RTT {link.rtt_ms:g} ms as {link.name}; black line: {link.name}")
    ax.set_ylabel("modelled latency (ms)")
    ax.set_title(f"latency vs bandwidth on {device.name}", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _table(run: dict[str, Any]) -> list[str]:
    lines = [("| scheme | accuracy | device MACs | bytes/inf | device | encode | network | cloud | return | "
              "**total ms** | energy mJ | SRAM KB | flash KB | fits |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in run["schemes"]:
        lat = s["latency_ms"]
        lines.append(
            f"| {s['name']} | {s['accuracy'] * 100:.2f}% | {s['device_macs']:,} | {s['payload_bytes']:.0f} | "
            + " | ".join(f"{lat[p]:.2f}" for p in PARTS)
            + f" | **{lat['total_ms']:.2f}** | {s['energy_mj']:.1f} | {s['sram_bytes'] / 1024:.0f} | "
              f"{s['flash_bytes'] / 1024:.0f} | {'yes' if s['fits_device'] else '**no**'} |")
    notes = [f"- {s['name']}: {s['note']}" for s in run["schemes"] if s["note"]]
    return lines + ([""] + notes if notes else [])


def _summary(run: dict[str, Any]) -> list[str]:
    s = run["summary"]
    valid = [x for x in run["schemes"] if not math.isnan(x["accuracy"]) and x["fits_device"]]
    agile = next(x for x in run["schemes"] if x["kind"] == "agilenn")
    fastest = min(valid, key=lambda x: x["latency_ms"]["total_ms"])
    as_good = [x for x in valid if x["accuracy"] >= agile["accuracy"]]
    lines = [(f"- fastest scheme here: **{fastest['name']}** ({fastest['latency_ms']['total_ms']:.2f} ms, "
              f"{fastest['accuracy'] * 100:.2f}%); AgileNN: {agile['latency_ms']['total_ms']:.2f} ms, "
              f"{agile['accuracy'] * 100:.2f}%")]
    if as_good:
        best = min(as_good, key=lambda x: x["latency_ms"]["total_ms"])
        lines.append(f"- fastest at AgileNN's accuracy or better: **{best['name']}** "
                     f"({best['latency_ms']['total_ms']:.2f} ms, {best['accuracy'] * 100:.2f}%)")
    if "speedup_vs_local_only" in s:
        reaches = s.get("local_only_reaches_agilenn_accuracy", True)
        compared = s.get("local_only_compared", s.get("local_only_nearest"))
        which = ("the fastest local-only model at AgileNN's accuracy or better" if reaches
                 else "the most accurate local-only model (none reaches AgileNN's accuracy)")
        lines.append(f"- vs {which} ({compared}): "
                     f"latency ratio **{s['speedup_vs_local_only']:.2f}x**, device MACs ratio "
                     f"**{s['device_macs_ratio_vs_local_only']:.1f}x**, energy ratio {s['energy_ratio_vs_local_only']:.2f}x"
                     + (f" (with one MAC rate for every layer, the paper's calibration alone: "
                        f"{s['speedup_vs_local_only_single_rate']:.2f}x)" if "speedup_vs_local_only_single_rate" in s
                        else ""))
    for key, label in (("full_offload", "full offload"), ("layer_split", "the best layer split"),
                       ("deepcod", "DeepCOD-like")):
        if f"bytes_ratio_vs_{key}" in s:
            lines.append(f"- vs {label}: bytes ratio **{s[f'bytes_ratio_vs_{key}']:.1f}x**, latency ratio "
                         f"{s[f'speedup_vs_{key}']:.2f}x")
    for name, detail in s.get("crossover_detail", {}).items():
        if detail["kbps"] is None:
            lines.append(f"- AgileNN is faster than {name} {detail['agilenn_faster']} "
                         f"({detail['range_kbps'][0]:g}-{detail['range_kbps'][1]:g} kbps)")
        else:
            lines.append(f"- AgileNN is faster than {name} {detail['agilenn_faster']} **{detail['kbps']:,.0f} kbps**")
    return lines


def _physics(measured: MeasuredSchemes) -> list[str]:
    full = next((s for s in measured.schemes if s.kind == "full-offload"), None)
    agile = measured.scheme("agilenn")
    if full is None:
        return []
    return [(f"Physics first: one input is {measured.raw_input_bytes} bytes raw and "
             f"{full.payload_bytes:.0f} bytes losslessly coded; AgileNN sends {agile.payload_bytes:.0f} bytes "
             f"(the paper's 96x96x3 inputs were 27,648 bytes raw, where transmission dominates). On a fast link "
             f"shipping the whole input can beat any on-device work; the tables say where each scheme wins.")]


def write_report(folder: Path, measured: MeasuredSchemes, runs: list[dict[str, Any]], links: list[LinkProfile],
                 device: DeviceProfile, cloud: DeviceProfile, framing: str) -> Path:
    """`links` are the profiles `runs` were simulated over, one each: a link read from a YAML file
    cannot be found again by its name."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_breakdown(runs, folder / "latency_breakdown.png")
    plot_tradeoff(measured, folder / "accuracy_vs_bytes.png")
    plot_bandwidth(measured, runs[0], links[0], device, cloud, framing, folder / "latency_vs_bandwidth.png")
    link_names = ", ".join(run["link"] for run in runs)
    lines = [f"# agilenn simulate: {measured.dataset} on {device.name} over {link_names}", "",
             f"Accuracy and bytes are measured with the exported models on {measured.samples} test samples "
             f"(`{measured.command or 'partitioner.simdata'}`, {measured.created or ''}); latency, energy "
             f"and memory are modelled (`simulation.model`) from the profiles listed at the end. Cloud: "
             f"{cloud.name}; framing: {framing} "
             + ("(the runtime's gRPC messages around each payload)." if framing == "grpc" else "(payload bytes only)."),
             "",
             *_physics(measured),
             "", "![latency breakdown](latency_breakdown.png)", ""]
    for run in runs:
        lines += [f"## {run['link']}", ""] + _table(run) + ["", "Summary (baseline / AgileNN; above 1 favours AgileNN):",
                                                             ""] + _summary(run) + [""]
    lines += ["## Accuracy vs bytes per inference", "", "![accuracy vs bytes](accuracy_vs_bytes.png)", "",
              "| family | variant | offloaded channels | bits | codec | bytes | device MACs | accuracy |",
              "|---|---|---|---|---|---|---|---|"]
    for p in sorted(measured.tradeoff, key=lambda p: (p.family, p.payload_bytes)):
        macs = f"{p.device_macs:,}" if p.device_macs is not None else "-"
        lines.append(f"| {p.family} | {p.name} | {p.offloaded_channels} | "
                     f"{_bits(p)} | {p.codec} | {p.payload_bytes:.0f} | {macs} | "
                     f"{p.accuracy * 100:.2f}% |")
    lines += ["", f"## Latency vs bandwidth ({runs[0]['link']}'s RTT and packets, rate swept)", "",
              "![latency vs bandwidth](latency_vs_bandwidth.png)", "",
              "## Layer-split candidates (reference network, 8-bit activations)", "",
              "| cut | activation | device MACs | bytes (range / zlib) | accuracy |", "|---|---|---|---|---|"]
    for c in measured.cuts:
        macs = sum(r.macs for r in c.device_layers)
        coded = f"{c.payload_bytes_range_median:.0f} / {c.payload_bytes_zlib_median:.0f}" if c.codec else "-"
        lines.append(f"| {c.name} | {c.activation_shape} | {macs:,} | {coded} | {c.accuracy * 100:.2f}% |")
    lines += ["", "## Profiles", ""]
    seen = set()
    for profile in [device, cloud, *links]:
        if profile.name in seen:
            continue
        seen.add(profile.name)
        lines += [f"- **{profile.name}** ({profile.calibration}): {profile.description}. Source: {profile.source}"]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

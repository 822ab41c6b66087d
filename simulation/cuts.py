"""Neurosurgeon-style choice of where to split a network between device and cloud.

Each candidate cut is a workload (the device layers before it, the coded bytes of the
activation at it, the cloud layers after it). Given a device, a link and a cloud, the chosen
cut is the one with the lowest modelled end-to-end latency (Kang et al., ASPLOS'17), among the
cuts that fit the device's memory and meet an optional accuracy floor; ties go to fewer bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simulation.model import Latency, Workload, latency, memory
from simulation.profiles import DeviceProfile, LinkProfile


@dataclass(frozen=True)
class Cut:
    name: str
    workload: Workload
    accuracy: float | None = None


@dataclass(frozen=True)
class CutChoice:
    cut: Cut
    latency: Latency
    table: list[tuple[Cut, Latency, bool]]  # every candidate: its latency and whether it was eligible


class NoEligibleCut(ValueError):
    """No candidate cut fits the device and meets the accuracy floor."""


def choose_cut(cuts: Sequence[Cut], device: DeviceProfile, link: LinkProfile, cloud: DeviceProfile | None,
               min_accuracy: float | None = None) -> CutChoice:
    if not cuts:
        raise NoEligibleCut("no candidate cuts given")
    table = []
    for cut in cuts:
        lat = latency(cut.workload, device, link, cloud)
        eligible = memory(cut.workload, device).fits and (
            min_accuracy is None or cut.accuracy is None or cut.accuracy >= min_accuracy)
        table.append((cut, lat, eligible))
    candidates = [(lat.total_ms, cut.workload.payload_bytes, i) for i, (cut, lat, ok) in enumerate(table) if ok]
    if not candidates:
        raise NoEligibleCut(f"none of {len(cuts)} cuts fits {device.name}"
                            + (f" with accuracy >= {min_accuracy}" if min_accuracy is not None else ""))
    _, _, best = min(candidates)
    return CutChoice(table[best][0], table[best][1], table)

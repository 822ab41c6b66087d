"""The workloads `agilenn simulate --workload NAME` knows, each with its measured-schemes file.

A workload is a dataset with its AgileNN bundle and baselines, measured once into one file by
`python -m partitioner.simdata`. Paths are relative to the working directory, as `--measured` is
(run from the repository root). `--measured FILE` names any other file instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agilenn.measured import MeasuredDataError


class WorkloadError(ValueError):
    """An unknown workload name, or both a workload and a measured file asked for."""


@dataclass(frozen=True)
class SimWorkload:
    name: str
    measured: Path  # its measured-schemes file
    how_to_measure: str  # the command that writes that file, for the error when it is missing
    firmware: Path  # AgileNN's front measured as Cortex-M7 firmware (agilenn firmware check --write)


DEFAULT_WORKLOAD = "fashion-mnist"

WORKLOADS: dict[str, SimWorkload] = {w.name: w for w in (
    SimWorkload("fashion-mnist", Path("bundles/baselines/measured.json"),
                "scripts/simulate_all.sh, or python -m partitioner.simdata --agilenn bundles/fashion-mnist "
                "--baselines bundles/baselines --out bundles/baselines/measured.json (needs the train extra)",
                Path("reports/firmware/fashion-mnist-cortex-m7.json")),
    SimWorkload("cluttered-fashion-mnist", Path("bundles/cluttered-fashion-mnist-baselines/measured.json"),
                "scripts/cluttered_experiment.sh measure (needs the train extra, bundles/cluttered-fashion-mnist "
                "and the baselines that scripts/cluttered_experiment.sh trains)",
                Path("reports/firmware/cluttered-fashion-mnist-cortex-m7.json")),
)}


def get(name: str) -> SimWorkload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise WorkloadError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None


def measured_file(workload: str | None = None, measured: str | Path | None = None) -> Path:
    """The measured-schemes file to read: `measured` when given, else the workload's (default
    fashion-mnist), which must exist. Naming both is an error."""
    if workload is not None and measured is not None:
        raise WorkloadError("pass either --workload or --measured, not both")
    if measured is not None:
        return Path(measured)  # load_measured says what is wrong with it
    entry = get(DEFAULT_WORKLOAD if workload is None else workload)
    if not entry.measured.exists():
        raise MeasuredDataError(f"no measured schemes for workload {entry.name!r}: {entry.measured} not found; "
                                f"measure them with {entry.how_to_measure}")
    return entry.measured

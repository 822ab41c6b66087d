"""AgileNN's device part measured on firmware, for `agilenn simulate --device-time firmware`.

The integer C front runs on an emulated Cortex-M7 (`agilenn firmware check --target cortex-m7 --write FILE`),
which counts its instructions exactly; time is instructions x cycles per instruction / clock. The counts
belong to a Cortex-M7, so only the profile of that board (at the firmware's clock) takes them.
"""

from __future__ import annotations

from pathlib import Path

from firmware.report import FirmwareCosts, load_costs
from simulation.model import MeasuredDevice
from simulation.profiles import DeviceProfile

# Profiles of the board the firmware's instructions were counted for, with its clock.
FIRMWARE_BOARDS = {"stm32f746-216mhz": 216_000_000}


class FirmwareTimeError(ValueError):
    """Firmware device time asked for on a device the counts do not describe, or with a bad CPI."""


def measured_device(costs_file: str | Path, device: DeviceProfile, cycles_per_instruction: float | None = None,
                    bundle_hash: str | None = None) -> MeasuredDevice:
    """The device part of AgileNN from measured instructions; CPI defaults to the top of the stated range.
    `bundle_hash`, when given, must be the hash of the bundle the firmware was generated from."""
    if device.name not in FIRMWARE_BOARDS:
        raise FirmwareTimeError(f"firmware device time is measured on a Cortex-M7 at 216 MHz "
                                f"({', '.join(FIRMWARE_BOARDS)}); device profile {device.name!r} is another device")
    costs: FirmwareCosts = load_costs(costs_file)
    if bundle_hash is not None and costs.bundle_hash != bundle_hash:
        raise FirmwareTimeError(f"{costs_file} measured bundle {costs.bundle_hash}, the simulated AgileNN scheme is "
                                f"{bundle_hash}: rerun agilenn firmware check --write {costs_file}")
    if costs.clock_hz != FIRMWARE_BOARDS[device.name]:
        raise FirmwareTimeError(f"{costs_file} is for a {costs.clock_hz / 1e6:g} MHz clock, {device.name} runs at "
                                f"{FIRMWARE_BOARDS[device.name] / 1e6:g} MHz")
    low, high = costs.cycles_per_instruction_range
    cpi = high if cycles_per_instruction is None else cycles_per_instruction
    if cpi <= 0:
        raise FirmwareTimeError(f"cycles per instruction must be positive, got {cpi}")
    return MeasuredDevice(
        compute_ms=costs.milliseconds(costs.compute_instructions, cpi),
        encode_ms=costs.milliseconds(costs.encode_instructions, cpi),
        flash_bytes=costs.flash_bytes,
        sram_bytes=costs.sram_bytes,
        source=(f"device time from firmware: {costs.instructions_per_inference_mean:,.0f} instructions x {cpi:g} "
                f"cycles per instruction at {costs.clock_hz / 1e6:g} MHz (stated range {low:g}-{high:g}); flash and "
                f"SRAM from the ELF and a painted stack ({Path(costs_file).name})"),
    )

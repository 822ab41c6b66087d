"""The measured costs of a firmware front, as `agilenn firmware check --write FILE` records them and
`agilenn simulate --device-time firmware` reads them: instructions, sizes and how instructions become time.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ENCODE_KIND = "quantize_encode"


class LayerCost(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    kind: str
    macs: int
    instructions_mean: float


class FirmwareCosts(BaseModel):
    """What one Cortex-M7 run of the front measured (the subset of `firmware check --json` a simulation uses)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    bundle: str
    bundle_hash: str
    target: str
    samples: int
    macs: int
    instructions_per_inference_mean: float
    macs_per_instruction: float
    layers: list[LayerCost]
    clock_hz: int
    cycles_per_instruction_range: tuple[float, float]
    cycles_per_instruction_source: str
    flash_bytes: int
    sram_bytes: int = Field(description="static SRAM + the stack's painted peak")
    payloads_identical: int
    local_logits_identical: int

    @property
    def encode_instructions(self) -> float:
        """The quantizer and the range coder: what the simulator calls encoding."""
        return sum(layer.instructions_mean for layer in self.layers if layer.kind == ENCODE_KIND)

    @property
    def compute_instructions(self) -> float:
        return self.instructions_per_inference_mean - self.encode_instructions

    def milliseconds(self, instructions: float, cycles_per_instruction: float) -> float:
        return instructions * cycles_per_instruction / self.clock_hz * 1e3


class FirmwareReportError(ValueError):
    """A firmware costs file that is missing or does not describe a Cortex-M7 run."""


def load_costs(path: str | Path) -> FirmwareCosts:
    path = Path(path)
    if not path.exists():
        raise FirmwareReportError(f"{path} not found: write it with agilenn firmware check --bundle B "
                                  f"--target cortex-m7 --limit 200 --write {path}")
    try:
        costs = FirmwareCosts.model_validate(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise FirmwareReportError(f"{path} is not a firmware costs file: {exc}") from None
    if costs.target != "cortex-m7":
        raise FirmwareReportError(f"{path} measured target {costs.target!r}; device time needs a cortex-m7 run")
    return costs

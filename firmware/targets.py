"""What the firmware is built for: the host (fast bit-exact checks) and a Cortex-M7 board.

The Cortex-M7 budgets are an STM32F746's (1 MB flash, 320 KB SRAM), the board of the paper and of the
simulator's `stm32f746-216mhz` profile; the host has no budget.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    flash_bytes: int | None
    sram_bytes: int | None
    description: str


TARGETS = {
    "host": Target("host", None, None, "this machine's gcc, plain C kernels"),
    "cortex-m7": Target("cortex-m7", 1024 * 1024, 320 * 1024,
                        "arm-none-eabi-gcc -mcpu=cortex-m7 -mthumb -O2, DSP kernels, STM32F746 budgets"),
}


def target_named(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown firmware target {name!r}; known targets: {', '.join(TARGETS)}")
    return TARGETS[name]

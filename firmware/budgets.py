"""Flash and SRAM of a Cortex-M7 build, read from its ELF, and how instructions become time.

Flash is what the image stores: `.text` (code and, in this linker script, `.rodata`: the weights and
tables) and the initial values of `.data`. Static SRAM is `.data` + `.bss`; the stack's peak is measured
at run time (the startup paints the stack, the harness reads back how much of the paint is gone).

Instructions are not cycles. QEMU counts instructions exactly but models no pipeline, so time is
given as a range over cycles per instruction (CPI_RANGE), never as one figure.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from firmware.build import ToolchainError, require_tool
from firmware.targets import TARGETS

CLOCK_HZ = 216_000_000  # the STM32F746 at its rated clock, as the simulator's stm32f746-216mhz profile
CPI_RANGE = (1.0, 2.0)
CPI_SOURCE = (
    "1.0: one instruction a cycle, what a Cortex-M7 (dual-issue, so it can do better) sustains on integer loops "
    "with data in SRAM; 2.0: weights read from flash through the ART accelerator with wait states and load-use "
    "stalls. Cross-check: published int8 kernels on Cortex-M7 reach 0.2-0.5 MAC per cycle (CMSIS-NN under "
    "TFLite Micro about 0.23, TinyEngine about 0.5; MLPerf Tiny's best about 0.9), which these MACs per "
    "instruction give at a CPI inside this range."
)

FLASH_SECTIONS = (".text", ".ARM.exidx", ".init_array", ".data")
SRAM_SECTIONS = (".data", ".bss")


def section_sizes(elf: Path) -> dict[str, int]:
    """Section name -> size in bytes (`arm-none-eabi-size -A`)."""
    tool = require_tool("arm-none-eabi-size")
    result = subprocess.run([tool, "-A", "-d", str(elf)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(f"arm-none-eabi-size failed on {elf}: {result.stderr.strip()}")
    sizes = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def elf_budget(elf: Path, stack_peak_bytes: int) -> dict[str, int]:
    """Flash, static SRAM and SRAM with the stack's peak, beside the STM32F746's budgets."""
    sizes = section_sizes(elf)
    flash = sum(sizes.get(name, 0) for name in FLASH_SECTIONS)
    static = sum(sizes.get(name, 0) for name in SRAM_SECTIONS)
    target = TARGETS["cortex-m7"]
    return {
        "flash_bytes": flash,
        "sram_static_bytes": static,
        "stack_peak_bytes": stack_peak_bytes,
        "sram_bytes": static + stack_peak_bytes,
        "flash_budget_bytes": target.flash_bytes,
        "sram_budget_bytes": target.sram_bytes,
    }

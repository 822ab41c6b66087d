"""Builds of a generated front: the host (gcc) and the Cortex-M7 (arm-none-eabi-gcc, newlib-nano).

Both link the front with the test harness (`templates/agilenn_harness.c`), which streams inputs in and
records out; the platform file says where the streams go (stdin/stdout on the host, semihosting files
on the emulated board).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from firmware.codegen import TEMPLATES

# Both builds are warning-free at these flags; a warning is an error.
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
FRONT_SOURCES = ["agilenn_front.c", "agilenn_range_coder.c"]
HARNESS_SOURCES = ["agilenn_harness.c"]
HOOK = "-DAGILENN_LAYER_HOOK=agilenn_harness_layer_done"

CORTEX_M7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=soft", "-O2", "-ffunction-sections", "-fdata-sections"]
CORTEX_M7_LINK = ["--specs=nano.specs", "-nostartfiles", "-Wl,--gc-sections"]
DEBIAN_PACKAGES = {"gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
                   "qemu-system-arm": "qemu-system-arm"}


class ToolchainError(RuntimeError):
    """A compiler or emulator is missing, or a build failed; the message says which and how to get it."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} is not installed: apt-get install -y {DEBIAN_PACKAGES.get(name, name)} "
                             "(or `make firmware-tools` as root)")
    return path


@dataclass(frozen=True)
class Build:
    target: str
    binary: Path
    source_dir: Path


def _compile(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(f"{' '.join(command[:1])} failed:\n{result.stderr.strip()}")


def build_host(source_dir: Path, out_dir: Path) -> Build:
    """The front and harness for this machine: plain C kernels, for bit-exact checks over whole test sets."""
    compiler = require_tool("gcc")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "agilenn_front_host"
    sources = [source_dir / s for s in FRONT_SOURCES] + [TEMPLATES / s for s in HARNESS_SOURCES + ["platform_host.c"]]
    _compile([compiler, *WARNINGS, "-O2", HOOK, f"-I{source_dir}", f"-I{TEMPLATES}", *map(str, sources),
              "-o", str(binary)])
    return Build("host", binary, source_dir)


def build_cortex_m7(source_dir: Path, out_dir: Path) -> Build:
    """An ELF for the mps2-an500 board (Cortex-M7) with the STM32F746's flash and SRAM as its memory map."""
    compiler = require_tool("arm-none-eabi-gcc")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "agilenn_front_m7.elf"
    sources = [source_dir / s for s in FRONT_SOURCES] + [
        TEMPLATES / s for s in HARNESS_SOURCES + ["platform_m7.c", "startup_m7.c", "icount_m7.S"]]
    _compile([compiler, *WARNINGS, *CORTEX_M7_FLAGS, HOOK, "-DPLATFORM_COUNTS_INSTRUCTIONS=1",
              f"-I{source_dir}", f"-I{TEMPLATES}", *map(str, sources), *CORTEX_M7_LINK,
              f"-T{TEMPLATES / 'mps2_an500.ld'}", f"-Wl,-Map={out_dir / 'agilenn_front_m7.map'}", "-o", str(binary)])
    return Build("cortex-m7", binary, source_dir)


def build_offload_app(source_dir: Path, out_dir: Path) -> Build:
    """The offload app (generated with --app offload) for the mps2-an500: front, frames, board, startup.
    -ffp-contract=off keeps the float32 mix as numpy computes it (no fused multiply-add)."""
    compiler = require_tool("arm-none-eabi-gcc")
    if not (source_dir / "agilenn_offload_app.c").exists():
        raise ToolchainError(f"{source_dir} holds no offload app: generate it with --app offload")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "agilenn_offload_m7.elf"
    sources = [source_dir / s for s in FRONT_SOURCES + ["agilenn_frames.c", "board_mps2.c", "agilenn_offload_app.c"]]
    sources += [TEMPLATES / "startup_m7.c", TEMPLATES / "icount_m7.S"]
    _compile([compiler, *WARNINGS, *CORTEX_M7_FLAGS, "-ffp-contract=off", f"-I{source_dir}", f"-I{TEMPLATES}",
              *map(str, sources), *CORTEX_M7_LINK, f"-T{TEMPLATES / 'mps2_an500.ld'}", "-o", str(binary)])
    return Build("cortex-m7", binary, source_dir)


BUILDERS = {"host": build_host, "cortex-m7": build_cortex_m7}


def build(target: str, source_dir: str | Path, out_dir: str | Path) -> Build:
    if target not in BUILDERS:
        raise ValueError(f"unknown firmware target {target!r}; known targets: {', '.join(BUILDERS)}")
    return BUILDERS[target](Path(source_dir), Path(out_dir))

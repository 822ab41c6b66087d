"""The device front as firmware: an integer-only model derived from a bundle's int8 front, its numpy
reference (the golden model), a C99 code generator, host and Cortex-M7 builds, and runs on an emulated
Cortex-M7 (`qemu-system-arm -M mps2-an500`).

Reads bundles through the core; never imports torch or ray.
"""

"""C99 from an integer front: weights as `const` arrays, one static arena sized here, no malloc, no float.

`generate(bundle, out)` writes:

- `agilenn_front.h`: the API (`agilenn_front_run`) and the sizes a caller needs;
- `agilenn_front.c`: the ops in order, each a call into the kernels with its arena offsets;
- `agilenn_model.h`: the weights, biases, requantization, the normalisation table, the quantizer table and
  the codec's cumulative tables, as readable `static const` arrays;
- the kernels and the range encoder (copied templates);
- `firmware.json`: what the tools read back (layers, MACs, arena, payload capacity, logits' scale).

What the kernels cannot run is refused with the node's name (`UnsupportedFrontError`), and a front whose
constant data or RAM exceeds the target's budget with both figures (`FrontTooLargeError`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agilenn import range_int
from agilenn.bundle import Bundle
from agilenn.codec import RangeCodec
from firmware.integer_front import (
    ChannelSlice,
    Conv,
    Dense,
    InputMap,
    IntegerFront,
    Quantize,
    UnsupportedFrontError,
    lower_front,
)
from firmware.targets import Target

TEMPLATES = Path(__file__).parent / "templates"
KERNEL_FILES = ("agilenn_kernels.h", "agilenn_range_coder.h", "agilenn_range_coder.c")
# The offload app and what it needs beside the front: frames on the UART, and the board (UARTs, SysTick).
OFFLOAD_FILES = ("agilenn_offload_app.c", "agilenn_frames.h", "agilenn_frames.c", "board_mps2.h", "board_mps2.c")
FRONT_FILES = ("agilenn_front.h", "agilenn_front.c", "agilenn_model.h")
MANIFEST = "firmware.json"
ALIGN = 4
# The kernels' fast requantization takes the high word of acc * M, so the total shift must be >= 33.
MIN_TOTAL_SHIFT = 33
# Code and C library bytes a build adds to the constant data (measured on the Cortex-M7 builds, rounded up).
CODE_ALLOWANCE_BYTES = 16 * 1024


class FrontTooLargeError(ValueError):
    """The front's flash or SRAM exceeds the target's budget; the message gives both figures."""


@dataclass(frozen=True)
class Layer:
    """One generated step: what it computes, its MACs, where its output lives."""

    name: str
    kind: str
    macs: int


def c_identifier(name: str) -> str:
    ident = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_").lower()
    return ident if ident and not ident[0].isdigit() else f"n_{ident}"


_C_TYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "uint32_t": 4, "agilenn_channel_t": 16}


def _array(c_type: str, name: str, values: np.ndarray, per_line: int = 16, comment: str = "") -> str:
    flat = np.asarray(values).reshape(-1)
    lines = [", ".join(str(int(v)) for v in flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    head = f"/* {comment} */\n" if comment else ""
    return head + f"static const {c_type} {name}[{len(flat)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def extend_rows(rows: np.ndarray) -> np.ndarray:
    """int8 rows as the kernels' extended int16 rows: zero-padded to a multiple of 4, each group of four as
    (x0, x2, x1, x3), the order in which SXTB16 and its rotated form deliver them to SMLAD."""
    count, length = rows.shape
    padded = np.zeros((count, (length + 3) // 4 * 4), dtype=np.int16)
    padded[:, :length] = rows
    return padded.reshape(count, -1, 4)[:, :, [0, 2, 1, 3]].reshape(count, -1)


class _Arena:
    """Offsets for tensors with known lifetimes: first fit among the live blocks."""

    def __init__(self) -> None:
        self.live: dict[str, tuple[int, int]] = {}
        self.offsets: dict[str, int] = {}
        self.size = 0

    def allocate(self, name: str, size: int) -> int:
        size = (size + ALIGN - 1) // ALIGN * ALIGN
        offset = 0
        for start, length in sorted(self.live.values()):
            if offset + size <= start:
                break
            offset = max(offset, start + length)
        self.live[name] = (offset, size)
        self.offsets[name] = offset
        self.size = max(self.size, offset + size)
        return offset

    def release(self, name: str) -> None:
        self.live.pop(name, None)


def payload_capacity(probabilities: np.ndarray, symbols_per_table: int) -> int:
    """Bytes no payload can exceed: each symbol costs at most log2(2^24 / its probability) bits, plus the
    coder's truncation (< 0.006 bits a symbol, since the range stays >= 2^32) and two sealing words."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    worst_bits = (range_int.PRECISION - np.log2(probabilities.min(axis=1)) + 0.01).sum() * symbols_per_table
    return (math.ceil(worst_bits / 32) + 3) * 4


class _Generator:
    def __init__(self, front: IntegerFront, bundle: Bundle) -> None:
        self.front = front
        self.bundle = bundle
        self.model: list[str] = []
        self.constant_bytes = 0  # of the const arrays in `model`: what flash holds besides code
        self.calls: list[str] = []
        self.layers: list[Layer] = []
        self.arena = _Arena()
        self.scratch = 0
        self.fused_input = self.fusable_input_map()
        # A table that maps every pixel to itself: the normalisation lies wholly in the first layer's input
        # scale and zero point (the committed bundles), so one-channel pixels are read as they come.
        self.identity_input = (self.fused_input is not None and front.input_shape[0] == 1
                               and np.array_equal(self.fused_input.table, np.arange(256)))

    def constant(self, c_type: str, name: str, values: np.ndarray, per_line: int = 16, comment: str = "") -> None:
        """One const array of the model, counted in constant_bytes."""
        self.model.append(_array(c_type, name, values, per_line, comment))
        self.constant_bytes += _C_TYPE_BYTES[c_type] * int(np.asarray(values).size)

    def tensor_ref(self, name: str) -> str:
        if name == "input":
            return "input"
        if name == self.front.local_logits:
            return "local_logits_out"
        return f"arena + {self.arena.offsets[name]}"

    def fusable_input_map(self) -> InputMap | None:
        """The input map, when its only reader is a plain convolution that can map pixels as it reads them."""
        maps = [op for op in self.front.ops if isinstance(op, InputMap)]
        if not maps:
            return None
        readers = [op for op in self.front.ops if op.source == maps[0].target]
        if len(readers) == 1 and isinstance(readers[0], Conv) and not readers[0].depthwise:
            return maps[0]
        return None

    def last_uses(self) -> dict[str, int]:
        uses: dict[str, int] = {}
        for index, op in enumerate(self.front.ops):
            uses[op.source] = index
        return uses

    def run(self) -> None:
        last = self.last_uses()
        for index, op in enumerate(self.front.ops):
            fused = self.fused_input is not None and op.target == self.fused_input.target
            if op.target not in ("input", self.front.local_logits, self.front.indices) and not fused:
                self.arena.allocate(op.target, self.front.tensors[op.target].size)
            getattr(self, f"emit_{type(op).__name__.lower()}")(op)
            self.calls.append(f"    AGILENN_LAYER_DONE({index});")
            for name, final in last.items():
                if final == index:
                    self.arena.release(name)

    def channels(self, op: Conv | Dense, ident: str, bias: np.ndarray) -> str:
        """The per-channel array (bias, multiplier, offset, shift) of a layer, and its clamp as C arguments."""
        rq = op.requant
        if np.any(rq.shift < MIN_TOTAL_SHIFT):
            raise UnsupportedFrontError(
                f"node {op.name!r}: a requantization multiplier of "
                f"{float(np.max(rq.multiplier / 2.0 ** rq.shift)):.3g} is >= 0.25, beyond the kernels' "
                "single-multiply requantization")
        shift = rq.shift - 32
        offset = (np.int64(1) << (shift - 1)) + (np.int64(rq.zero_point) << shift)
        if np.any(offset >= 2 ** 31) or np.any(np.abs(bias) >= 2 ** 31):
            raise UnsupportedFrontError(f"node {op.name!r}: its bias, or its output zero point and shift, "
                                        "overflow the kernels' int32 requantization")
        rows = ",\n    ".join(f"{{{int(b)}, {int(m)}, {int(o)}, {int(h)}}}"
                              for b, m, o, h in zip(bias, rq.multiplier, offset, shift))
        self.model.append(f"/* {op.name}: per output channel {{bias, multiplier, offset, shift}}; output zero point "
                          f"{rq.zero_point} */\nstatic const agilenn_channel_t {ident}_channels[{len(bias)}] = {{\n"
                          f"    {rows}\n}};\n")
        self.constant_bytes += _C_TYPE_BYTES["agilenn_channel_t"] * len(bias)
        return f"{ident}_channels, {rq.low}, {rq.high}"

    def emit_inputmap(self, op: InputMap) -> None:
        channels, height, width = self.front.input_shape
        if self.identity_input:
            self.layers.append(Layer(op.name, "input_map (identity)", 0))
            return
        self.constant("uint8_t", "input_table", op.table,
                      comment="raw pixel -> first layer input: the normalisation, folded")
        if self.fused_input is op:
            self.layers.append(Layer(op.name, "input_map (in the next layer)", 0))
            return
        self.calls.append(f"    /* {op.name}: raw pixels -> uint8 input, normalisation folded into a table */\n"
                          f"    agilenn_input_map(input, {self.tensor_ref(op.target)}, input_table, {channels}, "
                          f"{height * width});")
        self.layers.append(Layer(op.name, "input_map", 0))

    def emit_conv(self, op: Conv) -> None:
        ident = c_identifier(op.name)
        c_in, h_in, w_in = self.front.tensors[op.source].shape
        c_out, h_out, w_out = self.front.tensors[op.target].shape
        kh, kw = op.weights.shape[2:]
        macs = c_out * h_out * w_out * int(np.prod(op.weights.shape[1:]))
        target = self.tensor_ref(op.target)
        geometry = (f"{h_in}, {w_in}, {c_in}, {h_out}, {w_out}, {c_out}, {kh}, {kw}, {op.stride[0]}, {op.stride[1]}, "
                    f"{op.pads[0]}, {op.pads[1]}")
        shape = f"{kh}x{kw}/{op.stride[0]}, {c_in} -> {c_out} channels{', padded' if any(op.pads) else ''}"
        if op.depthwise:
            weights = op.weights[:, 0].transpose(1, 2, 0)  # [kh][kw][channels]
            self.constant("int8_t", f"{ident}_weights", weights, comment=f"{op.name}: depthwise {shape}")
            channels = self.channels(op, ident, op.bias)
            self.scratch = max(self.scratch, 4 * c_in)
            self.calls.append(
                f"    /* {op.name}: depthwise convolution {shape} */\n"
                f"    agilenn_depthwise_conv({self.tensor_ref(op.source)}, {ident}_weights, {channels}, "
                f"{op.input_zero_point}, {h_in}, {w_in}, {c_in}, {h_out}, {w_out}, {kh}, {kw}, "
                f"{op.stride[0]}, {op.stride[1]}, {op.pads[0]}, {op.pads[1]}, (int32_t *)scratch, {target});")
            self.layers.append(Layer(op.name, "depthwise_conv", macs))
            return
        weights = op.weights.transpose(0, 2, 3, 1)  # [out][kh][kw][in]
        self.constant("int16_t", f"{ident}_weights", extend_rows(weights.reshape(c_out, -1)),
                      comment=f"{op.name}: {shape}; rows of [kh][kw][in], extended (x0, x2, x1, x3)")
        # Padding holds the zero point (a real zero), so folding it into the bias stays exact.
        folded = op.bias.astype(np.int64) - op.input_zero_point * weights.reshape(c_out, -1).astype(np.int64).sum(1)
        channels = self.channels(op, ident, folded)
        fused = self.fused_input is not None and op.source == self.fused_input.target
        pointwise = kh == kw == 1 and op.stride == (1, 1) and not any(op.pads) and not fused
        self.scratch = max(self.scratch, 9 * ((kh * kw * c_in + 3) // 4 * 4) + 4 * c_out)  # AGILENN_CONV_SCRATCH_BYTES
        source, table = (("input", "0" if self.identity_input else "input_table") if fused
                         else (self.tensor_ref(op.source), "0"))
        kind = "pointwise_conv" if pointwise else "conv"
        note = ""
        if fused:
            note = (", reading raw pixels (the normalisation is the input's scale and zero point)" if self.identity_input
                    else ", reading raw pixels through the normalisation table")
        self.calls.append(f"    /* {op.name}: {kind.replace('_', ' ')} {shape}{note} */\n"
                          f"    agilenn_conv({source}, {table}, {ident}_weights, {channels}, {geometry}, "
                          f"{op.input_zero_point}, scratch, {target});")
        self.layers.append(Layer(op.name, kind, macs))

    def emit_dense(self, op: Dense) -> None:
        ident = c_identifier(op.name)
        channels, height, width = self.front.tensors[op.source].shape
        c_out = op.weights.shape[0]
        # The input is HWC in the arena; ONNX flattens it CHW: reorder the weights' columns to match.
        weights = op.weights.reshape(c_out, channels, height, width).transpose(0, 2, 3, 1).reshape(c_out, -1)
        folded = op.bias.astype(np.int64) - op.input_zero_point * weights.astype(np.int64).sum(1)
        self.constant("int16_t", f"{ident}_weights", extend_rows(weights),
                      comment=f"{op.name}: dense {weights.shape[1]} -> {c_out}, inputs in HWC order, "
                              "extended (x0, x2, x1, x3)")
        channels = self.channels(op, ident, folded)
        self.scratch = max(self.scratch, 2 * ((weights.shape[1] + 3) // 4 * 4))
        self.calls.append(f"    /* {op.name}: dense {weights.shape[1]} -> {c_out}; bias - input zero point "
                          f"({op.input_zero_point}) x sum of weights */\n"
                          f"    agilenn_dense({self.tensor_ref(op.source)}, {ident}_weights, {weights.shape[1]}, "
                          f"{c_out}, {channels}, (int16_t *)(void *)scratch, {self.tensor_ref(op.target)});")
        self.layers.append(Layer(op.name, "dense", int(op.weights.size)))

    def emit_channelslice(self, op: ChannelSlice) -> None:
        channels, height, width = self.front.tensors[op.source].shape
        self.calls.append(f"    /* {op.name}: channels [{op.start}, {op.stop}) of {channels} */\n"
                          f"    agilenn_channel_slice({self.tensor_ref(op.source)}, {channels}, {op.start}, "
                          f"{op.stop - op.start}, {height * width}, {self.tensor_ref(op.target)});")
        self.layers.append(Layer(op.name, "channel_slice", 0))

    def emit_quantize(self, op: Quantize) -> None:
        codec = self.bundle.codec
        if not isinstance(codec, RangeCodec):
            raise UnsupportedFrontError(f"the bundle's codec {codec.codec_id!r} has no C encoder "
                                        f"(only {RangeCodec.PER_CHANNEL} and {RangeCodec.PER_POSITION})")
        channels, height, width = self.front.tensors[op.source].shape
        q = np.arange(256)
        table = (q[:, None] >= op.thresholds[None, :]).sum(1)
        probability = range_int.quantize_tables(codec.flat_tables).astype(np.int64)
        below = np.cumsum(probability, axis=1) - probability
        self.capacity = payload_capacity(probability, codec.symbols_per_table)
        levels = probability.shape[1]
        per_position = codec.codec_id == RangeCodec.PER_POSITION
        tables_of = "per channel and position" if per_position else "per channel"
        self.constant("uint8_t", "quantizer_table", table,
                      comment=f"uint8 feature -> nearest-centroid index; thresholds {op.thresholds.tolist()}")
        self.constant("uint32_t", "codec_below", below, levels,
                      comment=f"{codec.codec_id}, {tables_of}: probability below each symbol, units of 2^-24")
        self.constant("uint32_t", "codec_probability", probability, levels,
                      comment=f"{codec.codec_id}, {tables_of}: each symbol's probability, units of 2^-24")
        self.calls.append(
            f"    /* {op.name}: channels [{op.start}, {op.stop}) -> nearest-centroid indices -> {codec.codec_id} "
            f"payload */\n"
            f"    agilenn_range_encoder_init(&encoder, payload_out, AGILENN_PAYLOAD_CAPACITY);\n"
            f"    agilenn_quantize_encode({self.tensor_ref(op.source)}, {channels}, {op.start}, {op.stop - op.start}, "
            f"{height * width}, quantizer_table, codec_below, codec_probability, {levels}, {int(per_position)}, "
            f"&encoder);\n"
            f"    *payload_len = agilenn_range_encoder_finish(&encoder);")
        self.layers.append(Layer(op.name, "quantize_encode", 0))


def _header(front: IntegerFront, arena: int, capacity: int, classes: int, codec_id: str) -> str:
    channels, height, width = front.input_shape
    return f"""/*
 * agilenn front of bundle {front.bundle_name} ({front.bundle_hash}).
 * Generated by `agilenn firmware generate`; do not edit: regenerate from the bundle.
 *
 * agilenn_front_run() computes, for one raw uint8 image ({channels}x{height}x{width}, CHW), the local
 * predictor's uint8 logits and the {codec_id} payload of the remote features, which a gateway sends to
 * the cloud workers unchanged. Integer only; no allocation; the only state is the arena below.
 * A logit q means (q - AGILENN_LOGITS_ZERO_POINT) * {front.logits_scale!r}.
 */
#ifndef AGILENN_FRONT_H
#define AGILENN_FRONT_H

#include <stdint.h>

#define AGILENN_INPUT_BYTES {channels * height * width}u
#define AGILENN_CLASSES {classes}u
/* No payload exceeds this many bytes (each symbol at its least likely value). */
#define AGILENN_PAYLOAD_CAPACITY {capacity}u
#define AGILENN_ARENA_BYTES {arena}u
#define AGILENN_LOGITS_ZERO_POINT {front.logits_zero_point}
#define AGILENN_LAYERS {len(front.ops)}u

#define AGILENN_OK 0
#define AGILENN_ERROR_PAYLOAD (-1) /* the payload did not fit AGILENN_PAYLOAD_CAPACITY: never, by construction */

/*
 * input:            AGILENN_INPUT_BYTES raw pixels, 0..255
 * payload_out:      AGILENN_PAYLOAD_CAPACITY bytes; *payload_len receives the payload's length
 * local_logits_out: AGILENN_CLASSES uint8 logits
 * Returns AGILENN_OK or AGILENN_ERROR_PAYLOAD.
 */
int agilenn_front_run(const uint8_t *input, uint8_t *payload_out, uint32_t *payload_len, uint8_t *local_logits_out);

#endif /* AGILENN_FRONT_H */
"""


def _source(front: IntegerFront, arena_words: int, scratch: int, calls: list[str]) -> str:
    body = "\n".join(calls)
    return f"""/*
 * agilenn front of bundle {front.bundle_name}: the ops in order. Generated; do not edit.
 */
#include "agilenn_front.h"

#include "agilenn_kernels.h"
#include "agilenn_range_coder.h"
#include "agilenn_model.h"

/* A build may name a function to call after each step (the emulator harness counts instructions with it). */
#ifdef AGILENN_LAYER_HOOK
void AGILENN_LAYER_HOOK(uint32_t index);
#define AGILENN_LAYER_DONE(index) AGILENN_LAYER_HOOK(index)
#else
#define AGILENN_LAYER_DONE(index) ((void)0)
#endif

/* Every activation lives here, at offsets planned at generation time; words keep it 4-byte aligned. */
static uint32_t arena_words[{arena_words}];

int agilenn_front_run(const uint8_t *input, uint8_t *payload_out, uint32_t *payload_len, uint8_t *local_logits_out)
{{
    uint8_t *const arena = (uint8_t *)arena_words;
    uint8_t *const scratch = arena + {arena_words * 4 - scratch}; /* im2col patches, accumulators ({scratch} bytes) */
    agilenn_range_encoder_t encoder;
    (void)scratch;
{body}
    return *payload_len == 0 ? AGILENN_ERROR_PAYLOAD : AGILENN_OK;
}}
"""


def _model(front: IntegerFront, arrays: list[str]) -> str:
    return (f"/*\n * agilenn front of bundle {front.bundle_name}: weights, biases, requantization and tables.\n"
            " * Generated; do not edit. Included by agilenn_front.c only; every array is const (flash).\n */\n"
            "#ifndef AGILENN_MODEL_H\n#define AGILENN_MODEL_H\n\n#include \"agilenn_kernels.h\"\n\n"
            + "\n".join(arrays) + "\n#endif /* AGILENN_MODEL_H */\n")


APPS = ("harness", "offload")


def _app_config(front: IntegerFront, bundle: Bundle, deadline_ms: int) -> str:
    """The offload app's constants: the bundle's digest (PAYLOAD frames name it), the mixing weights and the
    logits' scale as float32 literals (so that the board mixes exactly as numpy does in float32)."""
    from agilenn.serial_frames import bundle_digest

    alpha = float(bundle.manifest.mixing.alpha_local)
    digest = ", ".join(f"0x{b:02x}" for b in bundle_digest(bundle.bundle_hash))

    def literal(value: float) -> str:
        return f"{float(np.float32(value)):.9g}f"

    return f"""/*
 * agilenn offload app of bundle {front.bundle_name}: its constants. Generated; do not edit.
 */
#ifndef AGILENN_APP_CONFIG_H
#define AGILENN_APP_CONFIG_H

#include <stdint.h>

/* How long the board waits for the remote logits, on its own timer; define it to change it. */
#ifndef AGILENN_APP_DEADLINE_MS
#define AGILENN_APP_DEADLINE_MS {int(deadline_ms)}u
#endif

/* mixed = alpha * local + (1 - alpha) * remote, in float32 as the Python device agent computes it */
#define AGILENN_APP_ALPHA_LOCAL {literal(alpha)}
#define AGILENN_APP_ALPHA_REMOTE {literal(1.0 - alpha)}
#define AGILENN_APP_LOGITS_SCALE {literal(front.logits_scale)}

/* SHA-256 of the bundle ({front.bundle_hash}): every PAYLOAD frame carries it */
static const uint8_t agilenn_app_bundle_digest[32] = {{{digest}}};

#endif /* AGILENN_APP_CONFIG_H */
"""


def generate(bundle: Bundle, out: str | Path, target: Target | None = None, app: str = "harness",
             deadline_ms: int = 50) -> dict:
    """Write the C front of `bundle` into `out`; returns what `firmware.json` records. `app`: `harness` (the
    front alone, for the test harness) or `offload` (also the constants of the microcontroller's offload
    loop, templates/agilenn_offload_app.c)."""
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}; known: {', '.join(APPS)}")
    front = lower_front(bundle)
    generator = _Generator(front, bundle)
    generator.run()
    scratch = (generator.scratch + ALIGN - 1) // ALIGN * ALIGN
    arena = generator.arena.size + scratch
    classes = front.tensors[front.local_logits].shape[0]
    constant = generator.constant_bytes
    ram = arena + generator.capacity
    if target is not None and target.flash_bytes is not None:
        problems = []
        if constant + CODE_ALLOWANCE_BYTES > target.flash_bytes:
            problems.append(f"flash: {constant} bytes of weights and tables + about {CODE_ALLOWANCE_BYTES} of code "
                            f"exceed the target's {target.flash_bytes}")
        if ram > target.sram_bytes:
            problems.append(f"SRAM: {arena} bytes of arena + {generator.capacity} of payload buffer exceed the "
                            f"target's {target.sram_bytes}")
        if problems:
            raise FrontTooLargeError(f"the front of {bundle.folder} does not fit {target.name}: " + "; ".join(problems))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agilenn_front.h").write_text(_header(front, arena, generator.capacity, classes, bundle.codec.codec_id))
    (out / "agilenn_front.c").write_text(_source(front, arena // 4, scratch, generator.calls))
    (out / "agilenn_model.h").write_text(_model(front, generator.model))
    for name in KERNEL_FILES:
        shutil.copyfile(TEMPLATES / name, out / name)
    if app == "offload":
        (out / "agilenn_app_config.h").write_text(_app_config(front, bundle, deadline_ms))
        for name in OFFLOAD_FILES:
            shutil.copyfile(TEMPLATES / name, out / name)
    record = {
        "bundle": front.bundle_name,
        "bundle_hash": front.bundle_hash,
        "input_shape": list(front.input_shape),
        "classes": classes,
        "arena_bytes": arena,
        "payload_capacity_bytes": generator.capacity,
        "constant_bytes": constant,
        "macs": front.macs,
        "app": app,
        "logits_scale": front.logits_scale,
        "logits_zero_point": front.logits_zero_point,
        "layers": [{"name": layer.name, "kind": layer.kind, "macs": layer.macs} for layer in generator.layers],
    }
    (out / MANIFEST).write_text(json.dumps(record, indent=1) + "\n")
    return record

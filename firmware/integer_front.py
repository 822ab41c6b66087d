"""The integer front: a bundle's int8 device front (`device.int8.onnx`, QDQ form) lowered to integer-only ops.

What the lowering produces is what the firmware runs, in the TFLite int8 arithmetic that CMSIS-NN and
TFLite Micro use:

- activations are uint8 with a zero point, weights int8 per output channel with zero point 0, biases
  int32 at the scale of input x weight;
- an op's int32 accumulator becomes its uint8 output by a per-channel fixed-point multiplier
  `M` in [2^30, 2^31) and shift `n`: ``out = clamp(((acc * M + 2^(n-1)) >> n) + zero_point)``, a single
  rounding (round half up), no float;
- the input normalisation ((x/255 - mean)/std, then its quantization) is folded into a 256-entry table
  from raw pixel to the first layer's uint8 input, computed here with the very float32 steps of the
  int8 front;
- the nearest-centroid quantizer becomes integer thresholds on the uint8 features: the index of a value
  is the number of thresholds it reaches.

Anything the lowering does not know is refused with the node's name and what is missing
(`UnsupportedFrontError`), before any C is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agilenn.bundle import Bundle


class UnsupportedFrontError(ValueError):
    """A front the integer lowering cannot express: names the node and what is missing."""


# ---------------------------------------------------------------------------------------------------
# The integer model


@dataclass(frozen=True)
class Requantization:
    """int32 accumulator -> uint8: ``clamp(((acc * multiplier + 2^(shift-1)) >> shift) + zero_point, low, high)``."""

    multiplier: np.ndarray  # int64 per output channel, in [2^30, 2^31)
    shift: np.ndarray  # int64 per output channel, in [1, 62]
    zero_point: int
    low: int = 0
    high: int = 255

    @classmethod
    def from_scales(cls, real: np.ndarray, zero_point: int, low: int = 0, high: int = 255) -> Requantization:
        """Fixed-point form of the real multipliers `real` (input scale x weight scale / output scale)."""
        real = np.asarray(real, dtype=np.float64)
        if np.any(real <= 0) or not np.all(np.isfinite(real)):
            raise UnsupportedFrontError(f"requantization multipliers must be positive and finite, got {real}")
        mantissa, exponent = np.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
        multiplier = np.round(mantissa * 2.0 ** 31).astype(np.int64)
        carry = multiplier == 2 ** 31
        multiplier[carry] //= 2
        exponent = exponent.astype(np.int64) + carry
        shift = 31 - exponent
        # A multiplier below 2^-31 loses its low bits rather than overflow the shift.
        excess = np.maximum(shift - 62, 0)
        multiplier >>= excess
        shift -= excess
        if np.any(shift < 1):
            raise UnsupportedFrontError(f"a requantization multiplier of {real.max():.3g} is not below 1")
        return cls(multiplier, shift, int(zero_point), int(low), int(high))

    def apply(self, acc: np.ndarray, channel_axis: int) -> np.ndarray:
        """The reference arithmetic on int64 accumulators; `channel_axis` indexes the per-channel arrays."""
        shape = [1] * acc.ndim
        shape[channel_axis] = -1
        multiplier = self.multiplier.reshape(shape)
        shift = self.shift.reshape(shape)
        scaled = (acc.astype(np.int64) * multiplier + (np.int64(1) << (shift - 1))) >> shift
        return np.clip(scaled + self.zero_point, self.low, self.high).astype(np.uint8)


@dataclass(frozen=True)
class Tensor:
    """A uint8 activation: shape (C, H, W) and the quantization that maps it to real values."""

    name: str
    shape: tuple[int, int, int]
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class InputMap:
    """Raw uint8 pixel -> the first layer's uint8 input, one table for every pixel."""

    name: str
    source: str
    target: str
    table: np.ndarray  # uint8 (256,)


@dataclass(frozen=True)
class Conv:
    """2-D convolution, plain (groups=1) or depthwise (groups = channels), on uint8 activations."""

    name: str
    source: str
    target: str
    weights: np.ndarray  # int8 (C_out, C_in/groups, kh, kw)
    bias: np.ndarray  # int32 (C_out,)
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    groups: int
    input_zero_point: int
    requant: Requantization

    @property
    def depthwise(self) -> bool:
        return self.groups > 1


@dataclass(frozen=True)
class Dense:
    """Fully connected layer over the flattened (C, H, W) input, in that order."""

    name: str
    source: str
    target: str
    weights: np.ndarray  # int8 (C_out, K)
    bias: np.ndarray  # int32 (C_out,)
    input_zero_point: int
    requant: Requantization


@dataclass(frozen=True)
class ChannelSlice:
    """Channels [start, stop) of `source` as a tensor of their own (the local channels)."""

    name: str
    source: str
    target: str
    start: int
    stop: int


@dataclass(frozen=True)
class Quantize:
    """Nearest-centroid indices of channels [start, stop) of `source`: the number of thresholds reached."""

    name: str
    source: str
    target: str
    start: int
    stop: int
    thresholds: np.ndarray  # int (levels - 1,), ascending; 256 marks a level no uint8 value reaches


Op = InputMap | Conv | Dense | ChannelSlice | Quantize


@dataclass
class IntegerFront:
    """The whole front: tensors, ops in execution order, and which tensors are the outputs."""

    bundle_name: str
    bundle_hash: str
    input_shape: tuple[int, int, int]
    tensors: dict[str, Tensor]
    ops: list[Op]
    local_logits: str
    indices: str
    features: str
    levels: int
    index_shape: tuple[int, int, int] = field(default=(0, 0, 0))

    @property
    def logits_scale(self) -> float:
        return self.tensors[self.local_logits].scale

    @property
    def logits_zero_point(self) -> int:
        return self.tensors[self.local_logits].zero_point

    def dequantize_logits(self, logits: np.ndarray) -> np.ndarray:
        return (logits.astype(np.float32) - np.float32(self.logits_zero_point)) * np.float32(self.logits_scale)

    @property
    def macs(self) -> int:
        total = 0
        for op in self.ops:
            if isinstance(op, Conv):
                out = self.tensors[op.target].shape
                total += out[0] * out[1] * out[2] * int(np.prod(op.weights.shape[1:]))
            elif isinstance(op, Dense):
                total += int(op.weights.size)
        return total


# ---------------------------------------------------------------------------------------------------
# Lowering from the QDQ graph


def quantize_linear(x: np.ndarray, scale: float, zero_point: int, dtype=np.uint8) -> np.ndarray:
    """ONNX QuantizeLinear in float32: round half to even, then saturate."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_linear(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


@dataclass(frozen=True)
class _PixelFunction:
    """A float tensor that is an elementwise function of the raw pixel: its value for each of 256 pixels."""

    values: np.ndarray  # float32 (256,)


@dataclass(frozen=True)
class _QuantizedPixels:
    table: np.ndarray  # uint8 (256,)
    scale: float
    zero_point: int


@dataclass(frozen=True)
class _View:
    """Channels [start, stop) of a uint8 tensor, optionally flattened."""

    tensor: str
    start: int
    stop: int
    flat: bool = False


@dataclass(frozen=True)
class _Pending:
    """A float result of a Conv or Gemm that the next QuantizeLinear turns into uint8."""

    node: object
    source: _View
    low: float = -np.inf
    high: float = np.inf


@dataclass(frozen=True)
class _CentroidDistances:
    view: _View
    centroids: np.ndarray
    squared: bool = False


@dataclass(frozen=True)
class _Indices:
    view: _View
    centroids: np.ndarray


_ELEMENTWISE = {"Mul": np.multiply, "Sub": np.subtract, "Add": np.add, "Div": np.divide}
SUPPORTED_OPS = ("QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "Relu", "Clip", "Slice", "Reshape",
                 "Flatten", "Unsqueeze", "Sub", "Pow", "ArgMin", "Cast", *_ELEMENTWISE)


class _Lowering:
    def __init__(self, model, bundle: Bundle) -> None:
        from onnx import numpy_helper

        self.bundle = bundle
        self.graph = model.graph
        self.constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.values: dict[str, object] = {}
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        (graph_input,) = [i for i in model.graph.input if i.name not in self.constants]
        self.values[graph_input.name] = _PixelFunction(np.arange(256, dtype=np.float32))
        self.input_name = graph_input.name
        self.input_shape = tuple(int(d) for d in bundle.manifest.input.shape)

    # -- helpers ------------------------------------------------------------------------------------
    def refuse(self, node, what: str) -> UnsupportedFrontError:
        return UnsupportedFrontError(f"node {node.name!r} ({node.op_type}): {what}")

    def constant(self, node, name: str) -> np.ndarray:
        if name not in self.constants:
            raise self.refuse(node, f"input {name!r} must be a constant")
        return self.constants[name]

    def attrs(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def tensor_of(self, view: _View) -> Tensor:
        return self.tensors[view.tensor]

    def add_tensor(self, name: str, shape, scale: float, zero_point: int) -> Tensor:
        tensor = Tensor(name, tuple(int(d) for d in shape), float(scale), int(zero_point))
        self.tensors[name] = tensor
        return tensor

    def materialize(self, node, view: _View) -> str:
        """A contiguous tensor holding exactly `view`'s channels (a slice op when it is a part)."""
        base = self.tensor_of(view)
        if view.start == 0 and view.stop == base.shape[0]:
            return base.name
        name = f"{base.name}_{view.start}_{view.stop}"
        if name not in self.tensors:
            self.add_tensor(name, (view.stop - view.start, *base.shape[1:]), base.scale, base.zero_point)
            self.ops.append(ChannelSlice(f"{node.name}:slice", base.name, name, view.start, view.stop))
        return name

    # -- nodes --------------------------------------------------------------------------------------
    def run(self) -> IntegerFront:
        for node in self.graph.node:
            handler = getattr(self, f"on_{node.op_type}", None)
            if handler is None:
                raise self.refuse(node, f"op {node.op_type} has no integer lowering "
                                        f"(supported: {', '.join(sorted(set(SUPPORTED_OPS)))})")
            handler(node)
        outputs = {o.name: self.values.get(o.name) for o in self.graph.output}
        logits, indices, features = (outputs.get(name) for name in ("local_logits", "remote_indices", "features"))
        if not isinstance(logits, _View) or not isinstance(indices, str) or not isinstance(features, _View):
            raise UnsupportedFrontError("the front must output uint8 local_logits, remote_indices from the "
                                        "nearest-centroid quantizer, and features")
        levels = self.bundle.manifest.quantizer.levels
        front = IntegerFront(self.bundle.manifest.name, self.bundle.bundle_hash, self.input_shape, self.tensors,
                             self.ops, logits.tensor, indices, features.tensor, levels,
                             self.tensors[indices].shape)
        return front

    def on_DequantizeLinear(self, node) -> None:
        source = node.input[0]
        scale = self.constant(node, node.input[1])
        zero_point = self.constant(node, node.input[2]) if len(node.input) > 2 else np.zeros_like(scale)
        if source in self.constants:
            self.constants[node.output[0]] = self.constants[source]
            self.values[node.output[0]] = ("constant", source, scale, zero_point)
            return
        value = self.values.get(source)
        if isinstance(value, _QuantizedPixels):
            self.values[node.output[0]] = _PixelFunction(dequantize_linear(value.table, value.scale, value.zero_point))
        elif isinstance(value, _View):
            tensor = self.tensor_of(value)
            if not np.isclose(float(scale), tensor.scale) or int(zero_point) != tensor.zero_point:
                raise self.refuse(node, "dequantizes with other parameters than its tensor was quantized with")
            self.values[node.output[0]] = value
        else:
            raise self.refuse(node, f"input {source!r} is not a quantized activation")

    def on_QuantizeLinear(self, node) -> None:
        value = self.values.get(node.input[0])
        scale = float(self.constant(node, node.input[1]))
        zero_point_array = self.constant(node, node.input[2])
        if zero_point_array.dtype != np.uint8:
            raise self.refuse(node, f"activations must be uint8, got {zero_point_array.dtype}")
        zero_point = int(zero_point_array)
        out = node.output[0]
        if isinstance(value, _PixelFunction):
            self.values[out] = _QuantizedPixels(quantize_linear(value.values, scale, zero_point), scale, zero_point)
        elif isinstance(value, _View):
            tensor = self.tensor_of(value)
            if not np.isclose(scale, tensor.scale) or zero_point != tensor.zero_point:
                raise self.refuse(node, f"requantizes {tensor.name} from scale {tensor.scale:.6g}/zero point "
                                        f"{tensor.zero_point} to {scale:.6g}/{zero_point}: no integer op does that")
            self.values[out] = value
        elif isinstance(value, _Pending):
            self.values[out] = self.emit_layer(value, out, scale, zero_point)
        else:
            raise self.refuse(node, f"input {node.input[0]!r} is neither a layer's output nor a quantized activation")

    def activation(self, node, name: str) -> _View:
        value = self.values.get(name)
        if isinstance(value, _View):
            return value
        source = next((n for n in self.graph.node if name in n.output), None)
        if source is not None and source.op_type == "DequantizeLinear":
            quantized = self.values.get(source.input[0])
            if isinstance(quantized, _QuantizedPixels):
                if "input_q" not in self.tensors:
                    self.add_tensor("input_q", self.input_shape, quantized.scale, quantized.zero_point)
                    self.ops.append(InputMap("input_map", "input", "input_q", quantized.table))
                view = _View("input_q", 0, self.input_shape[0])
                self.values[name] = view
                return view
        raise self.refuse(node, f"input {name!r} is not a quantized activation")

    def weights(self, node, name: str) -> tuple[np.ndarray, np.ndarray]:
        entry = self.values.get(name)
        if not (isinstance(entry, tuple) and entry[0] == "constant"):
            raise self.refuse(node, f"weights {name!r} must be a dequantized constant")
        _, source, scale, zero_point = entry
        q = self.constants[source]
        if q.dtype != np.int8:
            raise self.refuse(node, f"weights must be int8, got {q.dtype}")
        if np.any(zero_point != 0):
            raise self.refuse(node, "weights must be symmetric (zero point 0)")
        return q, np.broadcast_to(np.asarray(scale, dtype=np.float64), (q.shape[0],))

    def bias(self, node, name: str | None, channels: int, expected_scale: np.ndarray) -> np.ndarray:
        if not name:
            return np.zeros(channels, dtype=np.int32)
        entry = self.values.get(name)
        if not (isinstance(entry, tuple) and entry[0] == "constant"):
            raise self.refuse(node, f"bias {name!r} must be a dequantized int32 constant")
        _, source, scale, zero_point = entry
        q = self.constants[source]
        if q.dtype != np.int32 or np.any(zero_point != 0):
            raise self.refuse(node, "bias must be int32 with zero point 0")
        if not np.allclose(np.broadcast_to(scale, q.shape), expected_scale, rtol=1e-5):
            raise self.refuse(node, "bias scale is not input scale x weight scale")
        return q.astype(np.int32)

    def on_Conv(self, node) -> None:
        attrs = self.attrs(node)
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.refuse(node, "auto_pad is not supported; export with explicit pads")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise self.refuse(node, "dilated convolutions are not supported")
        self.values[node.output[0]] = _Pending(node, self.activation(node, node.input[0]))

    def on_Gemm(self, node) -> None:
        attrs = self.attrs(node)
        if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("beta", 1.0) != 1.0:
            raise self.refuse(node, "only Gemm with transB=1, transA=0, alpha=beta=1 (a dense layer) is supported")
        view = self.activation(node, node.input[0])
        if not view.flat:
            raise self.refuse(node, "its input must be a flattened activation")
        self.values[node.output[0]] = _Pending(node, view)

    def on_Relu(self, node) -> None:
        value = self.values.get(node.input[0])
        if not isinstance(value, _Pending):
            raise self.refuse(node, "only a ReLU right after a Conv or Gemm is supported")
        self.values[node.output[0]] = _Pending(value.node, value.source, max(value.low, 0.0), value.high)

    def on_Clip(self, node) -> None:
        value = self.values.get(node.input[0])
        if not isinstance(value, _Pending):
            raise self.refuse(node, "only a Clip right after a Conv or Gemm is supported")
        low = float(self.constant(node, node.input[1])) if len(node.input) > 1 and node.input[1] else -np.inf
        high = float(self.constant(node, node.input[2])) if len(node.input) > 2 and node.input[2] else np.inf
        self.values[node.output[0]] = _Pending(value.node, value.source, max(value.low, low), min(value.high, high))

    def emit_layer(self, pending: _Pending, out: str, scale: float, zero_point: int) -> _View:
        node = pending.node
        source = self.tensor_of(pending.source)
        weights, weight_scale = self.weights(node, node.input[1])
        bias = self.bias(node, node.input[2] if len(node.input) > 2 else None, weights.shape[0],
                         source.scale * weight_scale)
        real = source.scale * weight_scale / scale
        low = 0 if pending.low == -np.inf else int(quantize_linear(pending.low, scale, zero_point))
        high = 255 if pending.high == np.inf else int(quantize_linear(pending.high, scale, zero_point))
        requant = Requantization.from_scales(real, zero_point, low, high)
        source_name = self.materialize(node, pending.source)
        in_shape = self.tensors[source_name].shape
        if node.op_type == "Conv":
            attrs = self.attrs(node)
            groups = int(attrs.get("group", 1))
            kh, kw = (int(k) for k in attrs.get("kernel_shape", weights.shape[2:]))
            stride = tuple(int(s) for s in attrs.get("strides", [1, 1]))
            top, left, bottom, right = (int(p) for p in attrs.get("pads", [0, 0, 0, 0]))
            if groups not in (1, in_shape[0]) or (groups > 1 and weights.shape[:2] != (in_shape[0], 1)):
                raise self.refuse(node, f"groups={groups}: only plain (1) and depthwise convolutions are supported")
            height = (in_shape[1] + top + bottom - kh) // stride[0] + 1
            width = (in_shape[2] + left + right - kw) // stride[1] + 1
            self.add_tensor(out, (weights.shape[0], height, width), scale, zero_point)
            self.ops.append(Conv(node.name, source_name, out, weights, bias, stride, (top, left, bottom, right),
                                 groups, source.zero_point, requant))
        else:
            if weights.shape[1] != int(np.prod(in_shape)):
                raise self.refuse(node, f"weights take {weights.shape[1]} inputs, the input has {int(np.prod(in_shape))}")
            self.add_tensor(out, (weights.shape[0], 1, 1), scale, zero_point)
            self.ops.append(Dense(node.name, source_name, out, weights, bias, source.zero_point, requant))
        self.check_accumulator(node, weights, bias, source.zero_point)
        return _View(out, 0, weights.shape[0], flat=node.op_type == "Gemm")

    def check_accumulator(self, node, weights: np.ndarray, bias: np.ndarray, zero_point: int) -> None:
        """The int32 accumulator must not overflow for any input."""
        worst = np.abs(weights.reshape(weights.shape[0], -1).astype(np.int64)).sum(axis=1) * max(zero_point, 255 - zero_point)
        if np.any(worst + np.abs(bias.astype(np.int64)) >= 2 ** 31):
            raise self.refuse(node, "its int32 accumulator could overflow")

    def on_Slice(self, node) -> None:
        view = self.values.get(node.input[0])
        if not isinstance(view, _View) or view.flat:
            raise self.refuse(node, "only slicing the channels of an activation is supported")
        starts, ends = (self.constant(node, n) for n in node.input[1:3])
        axes = self.constant(node, node.input[3]) if len(node.input) > 3 else np.array([0])
        steps = self.constant(node, node.input[4]) if len(node.input) > 4 else np.array([1])
        if list(axes) != [1] or list(steps) != [1]:
            raise self.refuse(node, "only a channel slice (axis 1, step 1) is supported")
        channels = view.stop - view.start
        start = int(np.clip(starts[0] if starts[0] >= 0 else starts[0] + channels, 0, channels))
        stop = int(np.clip(ends[0] if ends[0] >= 0 else ends[0] + channels, 0, channels))
        self.values[node.output[0]] = _View(view.tensor, view.start + start, view.start + stop)

    def on_Reshape(self, node) -> None:
        view = self.values.get(node.input[0])
        shape = self.constant(node, node.input[1])
        if not isinstance(view, _View) or len(shape) != 2:
            raise self.refuse(node, "only flattening an activation to (batch, features) is supported")
        self.values[node.output[0]] = _View(view.tensor, view.start, view.stop, flat=True)

    def on_Flatten(self, node) -> None:
        view = self.values.get(node.input[0])
        if not isinstance(view, _View):
            raise self.refuse(node, "only flattening an activation is supported")
        self.values[node.output[0]] = _View(view.tensor, view.start, view.stop, flat=True)

    def on_Unsqueeze(self, node) -> None:
        view = self.values.get(node.input[0])
        if not isinstance(view, _View):
            raise self.refuse(node, "only the quantizer's unsqueeze of the remote channels is supported")
        self.values[node.output[0]] = ("unsqueezed", view)

    def on_Sub(self, node) -> None:
        value = self.values.get(node.input[0])
        if isinstance(value, tuple) and value[0] == "unsqueezed":
            centroids = self.constant(node, node.input[1]).astype(np.float32).reshape(-1)
            self.values[node.output[0]] = _CentroidDistances(value[1], centroids)
            return
        self.on_elementwise(node)

    def on_elementwise(self, node) -> None:
        value = self.values.get(node.input[0])
        if not isinstance(value, _PixelFunction):
            raise self.refuse(node, "elementwise arithmetic is supported only on the input's normalisation")
        operand = self.values.get(node.input[1])
        if isinstance(operand, tuple) and operand[0] == "constant":
            _, source, scale, zero_point = operand
            constant = dequantize_linear(self.constants[source], float(scale), int(zero_point))
        else:
            constant = self.constant(node, node.input[1]).astype(np.float32)
        if constant.size != 1:
            raise self.refuse(node, "the normalisation must use scalar constants")
        self.values[node.output[0]] = _PixelFunction(
            _ELEMENTWISE[node.op_type](value.values, np.float32(constant.reshape(()))).astype(np.float32))

    on_Mul = on_Add = on_Div = on_elementwise

    def on_Pow(self, node) -> None:
        value = self.values.get(node.input[0])
        if not isinstance(value, _CentroidDistances) or float(self.constant(node, node.input[1])) != 2.0:
            raise self.refuse(node, "only squaring distances to the centroids is supported")
        self.values[node.output[0]] = _CentroidDistances(value.view, value.centroids, squared=True)

    def on_ArgMin(self, node) -> None:
        value = self.values.get(node.input[0])
        attrs = self.attrs(node)
        if not isinstance(value, _CentroidDistances) or attrs.get("axis", 0) != -1 or attrs.get("select_last_index", 0):
            raise self.refuse(node, "only the nearest-centroid argmin over the last axis is supported")
        self.values[node.output[0]] = self.emit_quantizer(node, value)

    def on_Cast(self, node) -> None:
        value = self.values.get(node.input[0])
        if not isinstance(value, str):
            raise self.refuse(node, "only casting the quantizer's indices is supported")
        self.values[node.output[0]] = value

    def emit_quantizer(self, node, distances: _CentroidDistances) -> str:
        """Thresholds on the uint8 features that give exactly the float argmin of the front."""
        tensor = self.tensor_of(distances.view)
        q = np.arange(256, dtype=np.uint8)
        values = dequantize_linear(q, tensor.scale, tensor.zero_point)[:, None]
        gaps = values - distances.centroids[None, :]
        index = np.argmin(gaps * gaps if distances.squared else np.abs(gaps), axis=1)
        if np.any(np.diff(index) < 0):
            raise self.refuse(node, "the centroids' indices are not ordered, so no thresholds express them")
        levels = len(distances.centroids)
        thresholds = np.array([np.searchsorted(index, level) for level in range(1, levels)], dtype=np.int64)
        # A level no uint8 value reaches gets the threshold 256: never reached.
        name = "indices"
        view = distances.view
        shape = (view.stop - view.start, *tensor.shape[1:])
        self.add_tensor(name, shape, 1.0, 0)
        self.ops.append(Quantize(node.name, tensor.name, name, view.start, view.stop, thresholds))
        return name


def lower_front(bundle: Bundle) -> IntegerFront:
    """The integer front of `bundle`'s int8 device front."""
    import onnx

    role = bundle.device_role("int8")
    path = Path(bundle.folder) / bundle.manifest.files[role]
    front = _Lowering(onnx.load(str(path)), bundle).run()
    expected = bundle.remote_shape
    if front.index_shape != expected:
        raise UnsupportedFrontError(f"the quantizer gives indices shaped {front.index_shape}, the bundle's codec "
                                    f"expects {expected}")
    return front

"""The measured-schemes file: every scheme's accuracy, real encoded bytes and layer tables.

`python -m partitioner.simdata` measures them once with the exported models (it needs torch)
and writes them with `write_measured`; `agilenn simulate` reads them with `load_measured`
and needs neither torch nor the models. Both sides share these models, so a field the writer
drops or renames is an error naming the file and the field rather than a KeyError later.

Written files keep only the fields the writer set (`exclude_unset`): a scheme measured from a
bundle carries its bundle and coder fields, one taken from a cut of the reference network
carries the cut's name, and a field that was never measured stays absent rather than null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA = "agilenn-simdata-v1"
SchemeKind = Literal["agilenn", "local-only", "full-offload", "deepcod"]


class MeasuredDataError(ValueError):
    """The measured-schemes file is missing or not of the expected form."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerRow(_Record):
    """One Conv2d/Linear of a layer table (`partitioner.layers.layer_table`), int8, one sample."""

    name: str
    op: str  # conv, depthwise or linear
    macs: int
    inner: int  # length of the dot product behind each MAC
    weight_bytes: int = 0
    in_bytes: int = 0
    out_bytes: int = 0


class ProtocolOverheads(_Record):
    """Bytes the runtime's protobuf/gRPC messages add around a payload."""

    request_overhead_bytes: int
    response_bytes: int  # a whole InferResponse, framing included
    raw_response_bytes: int  # the logits alone


class GatePoint(_Record):
    """The confidence gate at one threshold: inputs whose local top probability reaches `threshold` are
    answered on the device, the others mixed; measured over the test split."""
    threshold: float
    local_share: float
    accuracy: float


class Scheme(_Record):
    name: str
    kind: SchemeKind
    accuracy: float
    payload_bytes: float  # median encoded bytes per inference; 0: nothing is offloaded
    input_bytes: int = 0
    encode_symbols: int = 0
    device_layers: list[LayerRow]
    cloud_layers: list[LayerRow] = Field(default_factory=list)
    # measured from an exported bundle or baseline folder
    bundle: str | None = None
    bundle_hash: str | None = None
    # taken from a cut of the reference network (local-large at `logits`, full-offload at `input`)
    cut: str | None = None
    codec: str | None = None
    # AgileNN and the DeepCOD-like baseline: their quantizer and coder
    payload_bytes_p99: float | None = None
    levels: int | None = None
    offloaded_channels: int | None = None
    fixed_centroids: bool = False
    alternatives: dict[str, float] = Field(default_factory=dict)  # payload bytes with other coders
    # AgileNN only
    accuracy_local_only: float | None = None
    confidence_gate: list[GatePoint] = Field(default_factory=list)  # thresholds 0.00 to 1.00
    alpha_local: float | None = None
    accuracy_reference: float | None = None
    # a scheme that ships an int8 device front: the bytes of that file's stored weights (flash), in place
    # of the layer table's estimate, and the accuracy measured with it
    device_weight_bytes: int | None = None
    accuracy_int8: float | None = None
    # the DeepCOD-like scheme is one of the tradeoff points, named here
    variant: str | None = None
    # a full-offload scheme whose coder loses information (JPEG at `jpeg_quality`); absent: lossless
    lossy: bool = False
    jpeg_quality: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _quantized_schemes_name_their_coder(self) -> Scheme:
        if self.kind in ("agilenn", "deepcod"):
            missing = [f for f in ("levels", "offloaded_channels", "codec") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a scheme of kind {self.kind!r} needs {', '.join(missing)}")
        if self.jpeg_quality is not None and not self.lossy:
            raise ValueError("a scheme with a jpeg_quality is lossy: set lossy true")
        return self


class CutRecord(_Record):
    """One candidate cut of the reference network (`partitioner.splits.measure_cuts`)."""

    name: str
    index: int  # into the reference network's modules, after which the cut lies
    device_layers: list[LayerRow]
    cloud_layers: list[LayerRow]
    activation_shape: list[int]
    codec: str | None  # None at `logits`: nothing leaves the device
    payload_bytes_median: float
    accuracy: float
    encode_symbols: int
    # absent at `logits`
    scale: float | None = None
    payload_bytes_mean: float | None = None
    payload_bytes_zlib_median: float | None = None
    payload_bytes_range_median: float | None = None
    raw_bytes: int | None = None


class TradeoffPoint(_Record):
    """One point of the accuracy-vs-bytes curve of AgileNN or the DeepCOD-like baseline."""

    family: Literal["agilenn", "deepcod"]
    name: str
    accuracy: float
    payload_bytes: float
    levels: int
    offloaded_channels: int
    codec: str
    fixed_centroids: bool = False
    device_macs: int | None = None
    alternatives: dict[str, float] = Field(default_factory=dict)


class MeasuredSchemes(_Record):
    # `schema` would shadow a BaseModel method; the file's key stays "schema"
    schema_id: Literal["agilenn-simdata-v1"] = Field(alias="schema")
    dataset: str
    samples: int
    created: str | None = None
    command: str | None = None  # the command line that measured the file
    raw_input_bytes: int
    classes: int
    protocol: ProtocolOverheads
    schemes: list[Scheme]
    cuts: list[CutRecord]
    tradeoff: list[TradeoffPoint]

    @field_validator("schemes")
    @classmethod
    def _has_agilenn(cls, schemes: list[Scheme]) -> list[Scheme]:
        if not any(s.kind == "agilenn" for s in schemes):
            raise ValueError("holds no AgileNN scheme")
        return schemes

    def scheme(self, kind: SchemeKind) -> Scheme:
        """The first scheme of `kind` (the file always holds one AgileNN scheme)."""
        return next(s for s in self.schemes if s.kind == kind)

    def cut(self, name: str) -> CutRecord:
        return next(c for c in self.cuts if c.name == name)

    def to_json(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True, exclude_unset=True) + "\n"


def _where(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "(top level)"


def parse_measured(data: object, source: str = "measured schemes") -> MeasuredSchemes:
    """Validate an already parsed file; errors name `source` and each field."""
    if not isinstance(data, dict):
        raise MeasuredDataError(f"{source}: a JSON object expected, found {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise MeasuredDataError(f"{source}: schema {data.get('schema')!r}, this agilenn reads {SCHEMA!r}")
    try:
        return MeasuredSchemes.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise MeasuredDataError(f"{source}: {problems}") from None


def load_measured(path: str | Path) -> MeasuredSchemes:
    path = Path(path)
    if not path.exists():
        raise MeasuredDataError(
            f"{path} not found; write it with `python -m partitioner.simdata --agilenn BUNDLE --baselines DIR "
            f"--out {path}` (needs the train extra), or pass --measured FILE")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MeasuredDataError(f"{path}: not JSON ({exc})") from None
    return parse_measured(data, str(path))


def write_measured(path: str | Path, measured: MeasuredSchemes) -> Path:
    path = Path(path)
    path.write_text(measured.to_json())
    return path

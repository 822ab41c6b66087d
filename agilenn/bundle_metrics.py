"""A bundle's measured figures: what `agilenn evaluate` prints and the manifest records.

`BundleMetrics` is what an evaluation on a test split yields (ONNX Runtime and the real codec, no
torch); the export adds the torch-measured skewness. `RecordedMetrics` is what the manifest keeps:
the same figures plus the export's verification reports. The field names are the JSON keys of
`agilenn evaluate --json` and of `manifest.json`, unchanged since those were plain dicts; a figure
that does not apply to a bundle (the int8 ones without an int8 front) is unset and left out of both.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class BundleMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle_hash: str
    samples: int = Field(description="test samples the figures are measured on")
    accuracy: float = Field(description="top-1 of the mixed prediction (device + cloud)")
    accuracy_local_only: float
    accuracy_remote_only: float
    accuracy_reference: float | None = Field(None, description="the unsplit reference model; None without one")
    # The share of importance in the local channels; measured with torch, so None where it is absent.
    skewness_trapezoid: float | None = None
    skewness_ig32: float | None = None
    payload_bytes_median: float
    payload_bytes_mean: float
    payload_bytes_p99: float
    payload_bytes_bitpack: int = Field(description="the same symbols bit-packed: the entropy coder's baseline")
    payload_bytes_zlib_median: float
    codec: str
    # Bundles measured before these figures existed do not carry them.
    quantizer_levels: int | None = None
    quantizer_levels_used: int | None = None
    quantizer_centroids: list[float] | None = None
    entropy_bits_per_symbol: float | None = None
    raw_input_bytes: int
    raw_input_zlib_bytes_median: float
    compression_rate: float = Field(description="raw input bytes over the median payload")
    device_macs: int
    alpha_local: float
    accuracy_logits_q8: float | None = Field(None, description="mixed, with the remote logits returned as q8-v1")
    # Present when the bundle carries an int8 device front.
    accuracy_int8: float | None = None
    accuracy_local_only_int8: float | None = None
    int8_remote_indices_equal_share: float | None = None
    payload_bytes_median_int8: float | None = None

    def with_figures(self, figures: dict[str, Any]) -> BundleMetrics:
        """These metrics with `figures` (e.g. the skewness) filled in, validated."""
        return type(self).model_validate({**self.model_dump(exclude_unset=True), **figures})


class RecordedMetrics(BundleMetrics):
    """What `manifest.json` records: the evaluation plus the export's checks of ONNX against torch.

    Figures it does not know (another version's, a skewness at other IG steps) are kept, not refused:
    they are information, outside the bundle hash, and must not stop a device from loading a bundle."""

    model_config = ConfigDict(extra="allow", frozen=True)

    verification: dict[str, Any] | None = Field(
        None, description="ONNX against torch on the first test samples; None where the export checks nothing")
    int8_verification: dict[str, Any] | None = Field(None, description="the int8 front's accuracy gate")

"""One typed config per experiment, read from YAML. Differences between experiments are data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agilenn.config_files import ConfigFileError, read_yaml_mapping, validate_mapping

CONFIG_SUFFIXES = (".yaml", ".yml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkSpec(_Strict):
    name: str = Field(description="a name in the network registry (partitioner.registry)")
    args: dict[str, Any] = Field(default_factory=dict)


class Networks(_Strict):
    extractor: NetworkSpec
    local: NetworkSpec
    remote: NetworkSpec
    reference: NetworkSpec = Field(description="the reference head; frozen, it is the XAI evaluator")


class Optimiser(_Strict):
    epochs: int = Field(ge=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = 0.9
    weight_decay: float = 5e-4


class Augment(_Strict):
    max_shift_px: int = Field(2, ge=0)
    horizontal_flip: bool = True


class Importance(_Strict):
    steps: int = Field(1, ge=1, description="IG steps during training; 1 is the paper's one-interval trapezoid")


class Remap(_Strict):
    samples: int = Field(10000, ge=1, description="training samples Algorithm 1 counts top-k memberships over")


class Joint(Optimiser):
    lam: float = Field(0.8, gt=0, le=1, description="loss = lam*CE + (1-lam)*(skewness + disorder)")
    rho: float = Field(0.8, gt=0, lt=1, description="skewness target")
    local_loss_weight: float = Field(0.0, ge=0, description="extra CE on the local logits alone")
    remote_loss_weight: float = Field(0.0, ge=0, description="extra CE on the remote logits alone")
    mixing_temperature: float = Field(4.0, gt=0, description="alpha = sigmoid(w / T)")
    rate_weight: float = Field(0.0, description=(
        "weight of the sent symbols' estimated entropy (bits per symbol) in the loss: larger sends fewer "
        "bytes at some accuracy, 0 leaves bytes to chance, negative spends more"))
    level_share_weight: float = Field(0.0, ge=0, description=(
        "weight of a penalty on quantizer levels carrying less than quantizer.min_level_share of the sent "
        "symbols: the rate term empties expensive levels, this keeps the declared ones in use"))
    distill_weight: float = Field(0.0, ge=0, description=(
        "weight of a KL term pulling the mixed prediction towards the frozen unsplit reference's"))
    distill_temperature: float = Field(4.0, gt=0, description="softmax temperature of that KL term")
    remote_init: Literal["fresh", "reference"] = Field("fresh", description=(
        "how the remote head starts the stage of a fresh run: fresh, or as the trained reference head "
        "reading only the offloaded channels (networks.remote must then equal networks.reference): a "
        "warm start that saves joint epochs when each costs many reference epochs"))


class Heads(Optimiser):
    """The last stage: the predictors and the mixing weight fitted to the features the bundle ships."""

    local_loss_weight: float = Field(0.3, ge=0, description="extra CE on the local logits alone")
    remote_loss_weight: float = Field(0.3, ge=0, description="extra CE on the remote logits alone")
    distill_weight: float = Field(0.0, ge=0, description=(
        "weight of a KL term pulling the mixed prediction towards the frozen unsplit reference's"))
    distill_temperature: float = Field(4.0, gt=0, description="softmax temperature of that KL term")


class Quantizer(_Strict):
    levels: int = Field(4, ge=2, le=256)
    softness: float = Field(1.0, gt=0, description="temperature of the soft assignment")
    init_centroids: list[float] | None = Field(None, description=(
        "initial centroids in (0, 6); by default 1-D k-means over the offloaded features when the joint "
        "stage starts"))
    min_level_share: float = Field(0.02, ge=0, lt=1, description=(
        "the share of sent symbols each level should carry (see joint_training.level_share_weight)"))
    learn_centroids: bool = Field(True, description=(
        "train the centroids with the network (ordered, kept apart); false keeps them where they start"))

    @model_validator(mode="after")
    def _check_init(self) -> Quantizer:
        if self.init_centroids is not None:
            if len(self.init_centroids) != self.levels:
                raise ValueError(f"init_centroids has {len(self.init_centroids)} values for {self.levels} levels")
            if not all(0 < c < 6 for c in self.init_centroids):
                raise ValueError("init_centroids must lie strictly inside (0, 6)")
        return self


class Export(_Strict):
    codec: Literal["range-v1", "range-v2", "bitpack-v1", "zlib-v1"] = Field("range-v1", description=(
        "the payload codec: range-v1 fits one table per channel, range-v2 one per channel and position"))
    verify_samples: int = Field(2000, ge=1)
    logits_atol: float = Field(1e-3, gt=0, description="largest |ONNX Runtime - PyTorch| logit difference allowed")
    index_mismatch_share: float = Field(1e-3, ge=0, description="share of remote indices allowed to differ (float ties)")
    int8: bool = Field(True, description="also ship device.int8.onnx, statically quantized and verified")
    int8_calibration_samples: int = Field(2000, ge=1, description="training images that calibrate its ranges")
    int8_max_accuracy_drop: float = Field(0.005, ge=0, description=(
        "largest loss of mixed or local-only test accuracy against float before export refuses"))
    int8_confidence: float = Field(0.95, gt=0.5, lt=1, description=(
        "export refuses the int8 front only when its loss exceeds int8_max_accuracy_drop with this confidence "
        "(a one-sided bound on the paired difference over the test samples)"))


class PartitionConfig(_Strict):
    name: str
    seed: int = 0
    dataset: str
    mean: float = Field(description="input normalisation: (x/255 - mean)/std")
    std: float = Field(gt=0)
    local_channels: int = Field(ge=1, description="k: the first k extractor channels stay on the device")
    networks: Networks
    quantizer: Quantizer = Quantizer()
    augment: Augment = Augment()
    importance: Importance = Importance()
    reference_training: Optimiser
    remap: Remap = Remap()
    joint_training: Joint
    polish: Joint | None = Field(None, description=(
        "an optional second joint stage run after joint_training, with its own schedule and loss "
        "weights (e.g. a few low-rate epochs with a larger skewness weight)"))
    heads: Heads | None = Field(None, description=(
        "an optional last stage that trains only the local and remote predictors and the mixing weight, the "
        "extractor and quantizer frozen: the joint stages move the features under the predictors until their "
        "last step, this one fits the predictors to the features the bundle ships (no second-order "
        "gradients, so an epoch costs a fraction of a joint one)"))
    export: Export = Export()
    train_limit: int | None = Field(None, ge=1, description="use only the first N training samples")
    test_limit: int | None = Field(None, ge=1)
    threads: int = Field(2, ge=1)
    fine_tune_from: str | None = Field(None, description=(
        "start from a trained split (a bundle folder, a run folder, a checkpoint file, or a config file: the "
        "split it trains in runs/<its name> (beside this run's folder), trained first when not there; relative to the "
        "working directory, as runs/ is, not to the config file) instead of "
        "pre-training: its extractor and evaluator are kept, parameters whose shape this config changes "
        "start fresh, and only joint_training (and polish and heads) run"))

    @model_validator(mode="after")
    def _check_remote_init(self) -> PartitionConfig:
        if self.joint_training.remote_init == "reference" and self.networks.remote != self.networks.reference:
            raise ValueError("joint_training.remote_init: reference needs networks.remote to equal "
                             "networks.reference (the same network and args)")
        return self

    @model_validator(mode="after")
    def _check_polish(self) -> PartitionConfig:
        if self.polish is not None and self.polish.mixing_temperature != self.joint_training.mixing_temperature:
            raise ValueError("polish.mixing_temperature must equal joint_training.mixing_temperature "
                             "(the temperature is part of the model)")
        return self


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, mappings merged key by key (a null replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.exists():
        raise ConfigFileError(f"config file {path} not found" + (f" (extended by {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigFileError(f"{path}: `extends` loops back to itself")
    data = read_yaml_mapping(path, "config")
    base = data.pop("extends", None)
    if base is None:
        return data
    # a variant names its base relative to itself and states only what differs
    return _merge(_read(path.parent / base, (*chain, path.resolve())), data)


def load_config(path: str | Path) -> PartitionConfig:
    """Read an experiment config; `extends: OTHER.yaml` takes OTHER's settings under this file's."""
    return validate_mapping(PartitionConfig, _read(Path(path)), path, "config")

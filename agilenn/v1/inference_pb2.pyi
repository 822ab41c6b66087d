from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("data", "shape", "codec")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    codec: str
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., codec: _Optional[str] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "bundle_hash", "features")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_HASH_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    bundle_hash: str
    features: Tensor
    def __init__(self, request_id: _Optional[int] = ..., bundle_hash: _Optional[str] = ..., features: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("request_id", "logits", "status", "server_ms", "batch_size", "worker_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    logits: Tensor
    status: Status
    server_ms: float
    batch_size: int
    worker_id: str
    def __init__(self, request_id: _Optional[int] = ..., logits: _Optional[_Union[Tensor, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., server_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ServiceInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("shape", "dtype", "mean", "std")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    mean: float
    std: float
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ...) -> None: ...

class ServiceInfo(_message.Message):
    __slots__ = ("bundle_hash", "bundle_name", "input", "codec", "remote_shape", "num_classes", "endpoints", "worker_id", "max_message_bytes", "accepts_call_bundle_hash", "logits_codecs")
    BUNDLE_HASH_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    REMOTE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_CALL_BUNDLE_HASH_FIELD_NUMBER: _ClassVar[int]
    LOGITS_CODECS_FIELD_NUMBER: _ClassVar[int]
    bundle_hash: str
    bundle_name: str
    input: InputSpec
    codec: str
    remote_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    worker_id: str
    max_message_bytes: int
    accepts_call_bundle_hash: bool
    logits_codecs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundle_hash: _Optional[str] = ..., bundle_name: _Optional[str] = ..., input: _Optional[_Union[InputSpec, _Mapping]] = ..., codec: _Optional[str] = ..., remote_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ..., endpoints: _Optional[_Iterable[str]] = ..., worker_id: _Optional[str] = ..., max_message_bytes: _Optional[int] = ..., accepts_call_bundle_hash: _Optional[bool] = ..., logits_codecs: _Optional[_Iterable[str]] = ...) -> None: ...

class EchoMessage(_message.Message):
    __slots__ = ("request_id", "data")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    data: bytes
    def __init__(self, request_id: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

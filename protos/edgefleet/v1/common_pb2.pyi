import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_PENDING: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_UNLOADING: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_PENDING: _ClassVar[AgentState]
    AGENT_STATE_STARTING: _ClassVar[AgentState]
    AGENT_STATE_READY: _ClassVar[AgentState]
    AGENT_STATE_STOPPING: _ClassVar[AgentState]
    AGENT_STATE_FAILED: _ClassVar[AgentState]
    AGENT_STATE_SUPERSEDED: _ClassVar[AgentState]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_READY: _ClassVar[NodeState]
    NODE_STATE_SUSPECT: _ClassVar[NodeState]
    NODE_STATE_NOT_READY: _ClassVar[NodeState]
    NODE_STATE_UNTRUSTED: _ClassVar[NodeState]
    NODE_STATE_DRAINING: _ClassVar[NodeState]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_PENDING: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_UNLOADING: ModelState
MODEL_STATE_FAILED: ModelState
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_PENDING: AgentState
AGENT_STATE_STARTING: AgentState
AGENT_STATE_READY: AgentState
AGENT_STATE_STOPPING: AgentState
AGENT_STATE_FAILED: AgentState
AGENT_STATE_SUPERSEDED: AgentState
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_READY: NodeState
NODE_STATE_SUSPECT: NodeState
NODE_STATE_NOT_READY: NodeState
NODE_STATE_UNTRUSTED: NodeState
NODE_STATE_DRAINING: NodeState

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "name", "tool_call_id", "tool_calls")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    name: str
    tool_call_id: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., name: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class GenerationOptions(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "stop", "seed", "user", "tool_choice")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    user: str
    tool_choice: str
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., user: _Optional[str] = ..., tool_choice: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("alias", "runtime", "source", "quantization", "memory_bytes", "tasks", "parallel", "context", "sha256", "size_bytes", "peers", "token_env")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ENV_FIELD_NUMBER: _ClassVar[int]
    alias: str
    runtime: str
    source: str
    quantization: str
    memory_bytes: int
    tasks: _containers.RepeatedScalarFieldContainer[str]
    parallel: int
    context: int
    sha256: str
    size_bytes: int
    peers: _containers.RepeatedCompositeFieldContainer[BlobPeer]
    token_env: str
    def __init__(self, alias: _Optional[str] = ..., runtime: _Optional[str] = ..., source: _Optional[str] = ..., quantization: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., tasks: _Optional[_Iterable[str]] = ..., parallel: _Optional[int] = ..., context: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[BlobPeer, _Mapping]]] = ..., token_env: _Optional[str] = ...) -> None: ...

class BlobPeer(_message.Message):
    __slots__ = ("node_id", "address", "complete")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    complete: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., complete: _Optional[bool] = ...) -> None: ...

class AgentSpec(_message.Message):
    __slots__ = ("name", "model", "tools", "instructions", "tasks", "tool_config_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    instructions: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    tool_config_json: str
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., instructions: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., tool_config_json: _Optional[str] = ...) -> None: ...

class ResourceLimits(_message.Message):
    __slots__ = ("max_memory_bytes", "max_memory_fraction", "max_concurrent_agents", "max_queue_per_agent", "model_cache_bytes", "auto_unload_idle_models", "idle_timeout_s", "max_disk_bytes", "max_download_rate_bps")
    MAX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_AGENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_PER_AGENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    AUTO_UNLOAD_IDLE_MODELS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNLOAD_RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    max_memory_bytes: int
    max_memory_fraction: float
    max_concurrent_agents: int
    max_queue_per_agent: int
    model_cache_bytes: int
    auto_unload_idle_models: bool
    idle_timeout_s: float
    max_disk_bytes: int
    max_download_rate_bps: int
    def __init__(self, max_memory_bytes: _Optional[int] = ..., max_memory_fraction: _Optional[float] = ..., max_concurrent_agents: _Optional[int] = ..., max_queue_per_agent: _Optional[int] = ..., model_cache_bytes: _Optional[int] = ..., auto_unload_idle_models: _Optional[bool] = ..., idle_timeout_s: _Optional[float] = ..., max_disk_bytes: _Optional[int] = ..., max_download_rate_bps: _Optional[int] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("cpu_count", "memory_total_bytes", "memory_available_bytes", "accelerators")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    accelerators: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., accelerators: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("alias", "state", "reason", "progress", "memory_bytes", "runtime", "in_flight", "queue_depth", "last_used", "capacity", "download", "sha256", "size_bytes")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    alias: str
    state: ModelState
    reason: str
    progress: float
    memory_bytes: int
    runtime: str
    in_flight: int
    queue_depth: int
    last_used: _timestamp_pb2.Timestamp
    capacity: RuntimeCapacity
    download: DownloadProgress
    sha256: str
    size_bytes: int
    def __init__(self, alias: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., reason: _Optional[str] = ..., progress: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., runtime: _Optional[str] = ..., in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., last_used: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., capacity: _Optional[_Union[RuntimeCapacity, _Mapping]] = ..., download: _Optional[_Union[DownloadProgress, _Mapping]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class DownloadProgress(_message.Message):
    __slots__ = ("bytes_done", "bytes_total", "rate_bps", "eta_s", "source")
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_total: int
    rate_bps: float
    eta_s: float
    source: str
    def __init__(self, bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., rate_bps: _Optional[float] = ..., eta_s: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class RuntimeCapacity(_message.Message):
    __slots__ = ("slots_total", "slots_busy", "queued", "memory_bytes")
    SLOTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SLOTS_BUSY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    slots_total: int
    slots_busy: int
    queued: int
    memory_bytes: int
    def __init__(self, slots_total: _Optional[int] = ..., slots_busy: _Optional[int] = ..., queued: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("name", "model", "state", "reason", "in_flight", "queue_depth", "latency_ewma_ms", "requests_total", "failures_total")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILURES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    state: AgentState
    reason: str
    in_flight: int
    queue_depth: int
    latency_ewma_ms: float
    requests_total: int
    failures_total: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., reason: _Optional[str] = ..., in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., latency_ewma_ms: _Optional[float] = ..., requests_total: _Optional[int] = ..., failures_total: _Optional[int] = ...) -> None: ...

class NodeLoad(_message.Message):
    __slots__ = ("in_flight", "queue_depth", "latency_ewma_ms", "memory_used_bytes", "slots_total", "slots_busy", "runtime_queue_depth")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SLOTS_BUSY_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    queue_depth: int
    latency_ewma_ms: float
    memory_used_bytes: int
    slots_total: int
    slots_busy: int
    runtime_queue_depth: int
    def __init__(self, in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., latency_ewma_ms: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., slots_total: _Optional[int] = ..., slots_busy: _Optional[int] = ..., runtime_queue_depth: _Optional[int] = ...) -> None: ...

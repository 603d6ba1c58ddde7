import datetime

from edgefleet.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RuntimeInfo(_message.Message):
    __slots__ = ("name", "available", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "version", "cluster", "capacity", "runtimes", "cached_models", "generation", "started_at", "controller_id", "labels", "gateway_url", "leader_term")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODELS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_URL_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    version: str
    cluster: str
    capacity: _common_pb2.Capacity
    runtimes: _containers.RepeatedCompositeFieldContainer[RuntimeInfo]
    cached_models: _containers.RepeatedScalarFieldContainer[str]
    generation: int
    started_at: _timestamp_pb2.Timestamp
    controller_id: str
    labels: _containers.ScalarMap[str, str]
    gateway_url: str
    leader_term: int
    def __init__(self, node_id: _Optional[str] = ..., version: _Optional[str] = ..., cluster: _Optional[str] = ..., capacity: _Optional[_Union[_common_pb2.Capacity, _Mapping]] = ..., runtimes: _Optional[_Iterable[_Union[RuntimeInfo, _Mapping]]] = ..., cached_models: _Optional[_Iterable[str]] = ..., generation: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., controller_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., gateway_url: _Optional[str] = ..., leader_term: _Optional[int] = ...) -> None: ...

class NodeDesiredState(_message.Message):
    __slots__ = ("models", "agents", "limits")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelSpec]
    agents: _containers.RepeatedCompositeFieldContainer[_common_pb2.AgentSpec]
    limits: _common_pb2.ResourceLimits
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelSpec, _Mapping]]] = ..., agents: _Optional[_Iterable[_Union[_common_pb2.AgentSpec, _Mapping]]] = ..., limits: _Optional[_Union[_common_pb2.ResourceLimits, _Mapping]] = ...) -> None: ...

class ApplyStateRequest(_message.Message):
    __slots__ = ("generation", "controller_id", "state", "leader_term")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    generation: int
    controller_id: str
    state: NodeDesiredState
    leader_term: int
    def __init__(self, generation: _Optional[int] = ..., controller_id: _Optional[str] = ..., state: _Optional[_Union[NodeDesiredState, _Mapping]] = ..., leader_term: _Optional[int] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("kind", "name", "action", "message")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ItemResult.Kind]
        KIND_MODEL: _ClassVar[ItemResult.Kind]
        KIND_AGENT: _ClassVar[ItemResult.Kind]
    KIND_UNSPECIFIED: ItemResult.Kind
    KIND_MODEL: ItemResult.Kind
    KIND_AGENT: ItemResult.Kind
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ItemResult.Action]
        ACTION_UNCHANGED: _ClassVar[ItemResult.Action]
        ACTION_CREATED: _ClassVar[ItemResult.Action]
        ACTION_UPDATED: _ClassVar[ItemResult.Action]
        ACTION_REMOVED: _ClassVar[ItemResult.Action]
        ACTION_REJECTED: _ClassVar[ItemResult.Action]
    ACTION_UNSPECIFIED: ItemResult.Action
    ACTION_UNCHANGED: ItemResult.Action
    ACTION_CREATED: ItemResult.Action
    ACTION_UPDATED: ItemResult.Action
    ACTION_REMOVED: ItemResult.Action
    ACTION_REJECTED: ItemResult.Action
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: ItemResult.Kind
    name: str
    action: ItemResult.Action
    message: str
    def __init__(self, kind: _Optional[_Union[ItemResult.Kind, str]] = ..., name: _Optional[str] = ..., action: _Optional[_Union[ItemResult.Action, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ApplyStateResponse(_message.Message):
    __slots__ = ("generation", "results")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    results: _containers.RepeatedCompositeFieldContainer[ItemResult]
    def __init__(self, generation: _Optional[int] = ..., results: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("controller_id", "leader_term")
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    controller_id: str
    leader_term: int
    def __init__(self, controller_id: _Optional[str] = ..., leader_term: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "generation", "seq", "sent_at", "heartbeat", "models", "agents", "load", "capacity", "heartbeat_interval_s", "routes_generation", "leader_term", "refused_pushes", "blobs")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    ROUTES_GENERATION_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    REFUSED_PUSHES_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    generation: int
    seq: int
    sent_at: _timestamp_pb2.Timestamp
    heartbeat: bool
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelStatus]
    agents: _containers.RepeatedCompositeFieldContainer[_common_pb2.AgentStatus]
    load: _common_pb2.NodeLoad
    capacity: _common_pb2.Capacity
    heartbeat_interval_s: float
    routes_generation: int
    leader_term: int
    refused_pushes: int
    blobs: _containers.RepeatedCompositeFieldContainer[BlobHeld]
    def __init__(self, node_id: _Optional[str] = ..., generation: _Optional[int] = ..., seq: _Optional[int] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat: _Optional[bool] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelStatus, _Mapping]]] = ..., agents: _Optional[_Iterable[_Union[_common_pb2.AgentStatus, _Mapping]]] = ..., load: _Optional[_Union[_common_pb2.NodeLoad, _Mapping]] = ..., capacity: _Optional[_Union[_common_pb2.Capacity, _Mapping]] = ..., heartbeat_interval_s: _Optional[float] = ..., routes_generation: _Optional[int] = ..., leader_term: _Optional[int] = ..., refused_pushes: _Optional[int] = ..., blobs: _Optional[_Iterable[_Union[BlobHeld, _Mapping]]] = ...) -> None: ...

class BlobHeld(_message.Message):
    __slots__ = ("sha256", "size_bytes", "complete", "bytes_done", "last_used")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    complete: bool
    bytes_done: int
    last_used: _timestamp_pb2.Timestamp
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., complete: _Optional[bool] = ..., bytes_done: _Optional[int] = ..., last_used: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FetchBlobRequest(_message.Message):
    __slots__ = ("sha256", "source", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    source: str
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., source: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data", "offset", "total", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total: int
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class InvokeAgentRequest(_message.Message):
    __slots__ = ("agent", "messages", "options", "request_id", "generation")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    agent: str
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    options: _common_pb2.GenerationOptions
    request_id: str
    generation: int
    def __init__(self, agent: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., options: _Optional[_Union[_common_pb2.GenerationOptions, _Mapping]] = ..., request_id: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class ToolEvent(_message.Message):
    __slots__ = ("phase", "tool", "call_id", "side_effects", "arguments_json", "result")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[ToolEvent.Phase]
        PHASE_STARTED: _ClassVar[ToolEvent.Phase]
        PHASE_FINISHED: _ClassVar[ToolEvent.Phase]
        PHASE_REFUSED: _ClassVar[ToolEvent.Phase]
    PHASE_UNSPECIFIED: ToolEvent.Phase
    PHASE_STARTED: ToolEvent.Phase
    PHASE_FINISHED: ToolEvent.Phase
    PHASE_REFUSED: ToolEvent.Phase
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_EFFECTS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    phase: ToolEvent.Phase
    tool: str
    call_id: str
    side_effects: bool
    arguments_json: str
    result: str
    def __init__(self, phase: _Optional[_Union[ToolEvent.Phase, str]] = ..., tool: _Optional[str] = ..., call_id: _Optional[str] = ..., side_effects: _Optional[bool] = ..., arguments_json: _Optional[str] = ..., result: _Optional[str] = ...) -> None: ...

class InvokeAgentChunk(_message.Message):
    __slots__ = ("delta", "tool", "finish_reason", "usage", "node_id")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    delta: str
    tool: ToolEvent
    finish_reason: str
    usage: _common_pb2.Usage
    node_id: str
    def __init__(self, delta: _Optional[str] = ..., tool: _Optional[_Union[ToolEvent, _Mapping]] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., node_id: _Optional[str] = ...) -> None: ...

class InvokeAgentResponse(_message.Message):
    __slots__ = ("content", "finish_reason", "usage", "tools", "node_id")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    content: str
    finish_reason: str
    usage: _common_pb2.Usage
    tools: _containers.RepeatedCompositeFieldContainer[ToolEvent]
    node_id: str
    def __init__(self, content: _Optional[str] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[ToolEvent, _Mapping]]] = ..., node_id: _Optional[str] = ...) -> None: ...

class ProxyModelRequest(_message.Message):
    __slots__ = ("model", "body", "request_id", "generation")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    model: str
    body: bytes
    request_id: str
    generation: int
    def __init__(self, model: _Optional[str] = ..., body: _Optional[bytes] = ..., request_id: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class ProxyModelChunk(_message.Message):
    __slots__ = ("http_status", "content_type", "data")
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    http_status: int
    content_type: str
    data: bytes
    def __init__(self, http_status: _Optional[int] = ..., content_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: str
    def __init__(self, alias: _Optional[str] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: str
    def __init__(self, alias: _Optional[str] = ...) -> None: ...

class ModelProgress(_message.Message):
    __slots__ = ("alias", "state", "progress", "message")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    alias: str
    state: _common_pb2.ModelState
    progress: float
    message: str
    def __init__(self, alias: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ModelState, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class RouteReplica(_message.Message):
    __slots__ = ("node_id", "address", "generation")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    generation: int
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class TargetRoutes(_message.Message):
    __slots__ = ("name", "agent", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    agent: bool
    replicas: _containers.RepeatedCompositeFieldContainer[RouteReplica]
    def __init__(self, name: _Optional[str] = ..., agent: _Optional[bool] = ..., replicas: _Optional[_Iterable[_Union[RouteReplica, _Mapping]]] = ...) -> None: ...

class AgentRoute(_message.Message):
    __slots__ = ("name", "instructions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    instructions: str
    def __init__(self, name: _Optional[str] = ..., instructions: _Optional[str] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("alias", "tasks", "primary")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    alias: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    primary: bool
    def __init__(self, alias: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., primary: _Optional[bool] = ...) -> None: ...

class EscalationRoute(_message.Message):
    __slots__ = ("base_url", "model", "api_key_env", "timeout_s")
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    base_url: str
    model: str
    api_key_env: str
    timeout_s: float
    def __init__(self, base_url: _Optional[str] = ..., model: _Optional[str] = ..., api_key_env: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class DeploymentRoutes(_message.Message):
    __slots__ = ("name", "distributed", "strategy", "session_affinity", "agents", "models", "escalation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SESSION_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    distributed: bool
    strategy: str
    session_affinity: bool
    agents: _containers.RepeatedCompositeFieldContainer[AgentRoute]
    models: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    escalation: EscalationRoute
    def __init__(self, name: _Optional[str] = ..., distributed: _Optional[bool] = ..., strategy: _Optional[str] = ..., session_affinity: _Optional[bool] = ..., agents: _Optional[_Iterable[_Union[AgentRoute, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., escalation: _Optional[_Union[EscalationRoute, _Mapping]] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("generation", "controller_id", "deployments", "targets", "api_key_digests")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    controller_id: str
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentRoutes]
    targets: _containers.RepeatedCompositeFieldContainer[TargetRoutes]
    api_key_digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, generation: _Optional[int] = ..., controller_id: _Optional[str] = ..., deployments: _Optional[_Iterable[_Union[DeploymentRoutes, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[TargetRoutes, _Mapping]]] = ..., api_key_digests: _Optional[_Iterable[str]] = ...) -> None: ...

class ApplyRoutesRequest(_message.Message):
    __slots__ = ("table", "leader_term")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    table: RoutingTable
    leader_term: int
    def __init__(self, table: _Optional[_Union[RoutingTable, _Mapping]] = ..., leader_term: _Optional[int] = ...) -> None: ...

class ApplyRoutesResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

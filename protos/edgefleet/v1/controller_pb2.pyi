import datetime

from edgefleet.v1 import common_pb2 as _common_pb2
from edgefleet.v1 import node_pb2 as _node_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanStep(_message.Message):
    __slots__ = ("action", "node_id", "name", "reason", "deployment")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[PlanStep.Action]
        ACTION_LOAD_MODEL: _ClassVar[PlanStep.Action]
        ACTION_UNLOAD_MODEL: _ClassVar[PlanStep.Action]
        ACTION_START_AGENT: _ClassVar[PlanStep.Action]
        ACTION_STOP_AGENT: _ClassVar[PlanStep.Action]
        ACTION_EVICT_MODEL: _ClassVar[PlanStep.Action]
        ACTION_UPDATE_AGENT: _ClassVar[PlanStep.Action]
    ACTION_UNSPECIFIED: PlanStep.Action
    ACTION_LOAD_MODEL: PlanStep.Action
    ACTION_UNLOAD_MODEL: PlanStep.Action
    ACTION_START_AGENT: PlanStep.Action
    ACTION_STOP_AGENT: PlanStep.Action
    ACTION_EVICT_MODEL: PlanStep.Action
    ACTION_UPDATE_AGENT: PlanStep.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    action: PlanStep.Action
    node_id: str
    name: str
    reason: str
    deployment: str
    def __init__(self, action: _Optional[_Union[PlanStep.Action, str]] = ..., node_id: _Optional[str] = ..., name: _Optional[str] = ..., reason: _Optional[str] = ..., deployment: _Optional[str] = ...) -> None: ...

class Unplaced(_message.Message):
    __slots__ = ("kind", "name", "missing", "reason", "deployment")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    missing: int
    reason: str
    deployment: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., missing: _Optional[int] = ..., reason: _Optional[str] = ..., deployment: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("steps", "unplaced")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[PlanStep]
    unplaced: _containers.RepeatedCompositeFieldContainer[Unplaced]
    def __init__(self, steps: _Optional[_Iterable[_Union[PlanStep, _Mapping]]] = ..., unplaced: _Optional[_Iterable[_Union[Unplaced, _Mapping]]] = ...) -> None: ...

class Revision(_message.Message):
    __slots__ = ("deployment", "number", "applied_at", "source", "manifest", "digest", "cause")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    number: int
    applied_at: _timestamp_pb2.Timestamp
    source: str
    manifest: str
    digest: str
    cause: str
    def __init__(self, deployment: _Optional[str] = ..., number: _Optional[int] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., manifest: _Optional[str] = ..., digest: _Optional[str] = ..., cause: _Optional[str] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("manifest", "source", "dry_run")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    source: str
    dry_run: bool
    def __init__(self, manifest: _Optional[str] = ..., source: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("revision", "plan", "changed")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    revision: Revision
    plan: Plan
    changed: bool
    def __init__(self, revision: _Optional[_Union[Revision, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class DiffRequest(_message.Message):
    __slots__ = ("manifest", "source")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    source: str
    def __init__(self, manifest: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class DiffResponse(_message.Message):
    __slots__ = ("plan", "changed", "manifest_diff", "current_revision")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIFF_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    changed: bool
    manifest_diff: str
    current_revision: int
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., changed: _Optional[bool] = ..., manifest_diff: _Optional[str] = ..., current_revision: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("deployment", "dry_run")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    dry_run: bool
    def __init__(self, deployment: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("plan", "deleted")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    deleted: bool
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., deleted: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("deployment", "to_revision", "dry_run")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    to_revision: int
    dry_run: bool
    def __init__(self, deployment: _Optional[str] = ..., to_revision: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ListRevisionsRequest(_message.Message):
    __slots__ = ("deployment", "with_manifest")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    WITH_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    with_manifest: bool
    def __init__(self, deployment: _Optional[str] = ..., with_manifest: _Optional[bool] = ...) -> None: ...

class ListRevisionsResponse(_message.Message):
    __slots__ = ("revisions",)
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[Revision]
    def __init__(self, revisions: _Optional[_Iterable[_Union[Revision, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: int
    def __init__(self, events: _Optional[int] = ...) -> None: ...

class NodeView(_message.Message):
    __slots__ = ("id", "state", "reason", "address", "version", "last_heartbeat", "state_since", "generation", "observed_generation", "capacity", "load", "models", "agents", "labels", "discovered_by", "mark", "mark_reason", "marked_at", "drained", "routes_generation", "routes_reported")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DISCOVERED_BY_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    MARK_REASON_FIELD_NUMBER: _ClassVar[int]
    MARKED_AT_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    ROUTES_GENERATION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_REPORTED_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: _common_pb2.NodeState
    reason: str
    address: str
    version: str
    last_heartbeat: _timestamp_pb2.Timestamp
    state_since: _timestamp_pb2.Timestamp
    generation: int
    observed_generation: int
    capacity: _common_pb2.Capacity
    load: _common_pb2.NodeLoad
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelStatus]
    agents: _containers.RepeatedCompositeFieldContainer[_common_pb2.AgentStatus]
    labels: _containers.ScalarMap[str, str]
    discovered_by: str
    mark: str
    mark_reason: str
    marked_at: _timestamp_pb2.Timestamp
    drained: bool
    routes_generation: int
    routes_reported: bool
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.NodeState, str]] = ..., reason: _Optional[str] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., generation: _Optional[int] = ..., observed_generation: _Optional[int] = ..., capacity: _Optional[_Union[_common_pb2.Capacity, _Mapping]] = ..., load: _Optional[_Union[_common_pb2.NodeLoad, _Mapping]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelStatus, _Mapping]]] = ..., agents: _Optional[_Iterable[_Union[_common_pb2.AgentStatus, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., discovered_by: _Optional[str] = ..., mark: _Optional[str] = ..., mark_reason: _Optional[str] = ..., marked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., drained: _Optional[bool] = ..., routes_generation: _Optional[int] = ..., routes_reported: _Optional[bool] = ...) -> None: ...

class ReplicaView(_message.Message):
    __slots__ = ("node_id", "state", "reason", "in_flight", "queue_depth", "latency_ewma_ms", "circuit", "preferred")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: _common_pb2.AgentState
    reason: str
    in_flight: int
    queue_depth: int
    latency_ewma_ms: float
    circuit: str
    preferred: bool
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.AgentState, str]] = ..., reason: _Optional[str] = ..., in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., latency_ewma_ms: _Optional[float] = ..., circuit: _Optional[str] = ..., preferred: _Optional[bool] = ...) -> None: ...

class AgentView(_message.Message):
    __slots__ = ("name", "deployment", "model", "tools", "desired_replicas", "ready_replicas", "replicas", "unplaced_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    deployment: str
    model: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    desired_replicas: int
    ready_replicas: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaView]
    unplaced_reason: str
    def __init__(self, name: _Optional[str] = ..., deployment: _Optional[str] = ..., model: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., desired_replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaView, _Mapping]]] = ..., unplaced_reason: _Optional[str] = ...) -> None: ...

class ModelReplicaView(_message.Message):
    __slots__ = ("node_id", "state", "reason", "progress", "memory_bytes", "runtime", "in_flight", "latency_ewma_ms", "circuit")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: _common_pb2.ModelState
    reason: str
    progress: float
    memory_bytes: int
    runtime: str
    in_flight: int
    latency_ewma_ms: float
    circuit: str
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ModelState, str]] = ..., reason: _Optional[str] = ..., progress: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., runtime: _Optional[str] = ..., in_flight: _Optional[int] = ..., latency_ewma_ms: _Optional[float] = ..., circuit: _Optional[str] = ...) -> None: ...

class ModelView(_message.Message):
    __slots__ = ("alias", "deployments", "tasks", "replicas", "ready_replicas")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    alias: str
    deployments: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    replicas: _containers.RepeatedCompositeFieldContainer[ModelReplicaView]
    ready_replicas: int
    def __init__(self, alias: _Optional[str] = ..., deployments: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ..., replicas: _Optional[_Iterable[_Union[ModelReplicaView, _Mapping]]] = ..., ready_replicas: _Optional[int] = ...) -> None: ...

class DeploymentView(_message.Message):
    __slots__ = ("name", "type", "revision", "agents_desired", "agents_ready", "unplaced")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    AGENTS_DESIRED_FIELD_NUMBER: _ClassVar[int]
    AGENTS_READY_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    revision: Revision
    agents_desired: int
    agents_ready: int
    unplaced: _containers.RepeatedCompositeFieldContainer[Unplaced]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., revision: _Optional[_Union[Revision, _Mapping]] = ..., agents_desired: _Optional[int] = ..., agents_ready: _Optional[int] = ..., unplaced: _Optional[_Iterable[_Union[Unplaced, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "time", "severity", "reason", "object", "node_id", "message")
    class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SEVERITY_UNSPECIFIED: _ClassVar[Event.Severity]
        SEVERITY_INFO: _ClassVar[Event.Severity]
        SEVERITY_WARNING: _ClassVar[Event.Severity]
        SEVERITY_ERROR: _ClassVar[Event.Severity]
    SEVERITY_UNSPECIFIED: Event.Severity
    SEVERITY_INFO: Event.Severity
    SEVERITY_WARNING: Event.Severity
    SEVERITY_ERROR: Event.Severity
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: _timestamp_pb2.Timestamp
    severity: Event.Severity
    reason: str
    object: str
    node_id: str
    message: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severity: _Optional[_Union[Event.Severity, str]] = ..., reason: _Optional[str] = ..., object: _Optional[str] = ..., node_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("controller_id", "version", "deployments", "nodes", "agents", "models", "events", "gateway_url", "routes_generation", "control_plane")
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_URL_FIELD_NUMBER: _ClassVar[int]
    ROUTES_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_PLANE_FIELD_NUMBER: _ClassVar[int]
    controller_id: str
    version: str
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentView]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeView]
    agents: _containers.RepeatedCompositeFieldContainer[AgentView]
    models: _containers.RepeatedCompositeFieldContainer[ModelView]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    gateway_url: str
    routes_generation: int
    control_plane: ControlPlane
    def __init__(self, controller_id: _Optional[str] = ..., version: _Optional[str] = ..., deployments: _Optional[_Iterable[_Union[DeploymentView, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeView, _Mapping]]] = ..., agents: _Optional[_Iterable[_Union[AgentView, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelView, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., gateway_url: _Optional[str] = ..., routes_generation: _Optional[int] = ..., control_plane: _Optional[_Union[ControlPlane, _Mapping]] = ...) -> None: ...

class ControllerMember(_message.Message):
    __slots__ = ("controller_id", "address", "role")
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    controller_id: str
    address: str
    role: str
    def __init__(self, controller_id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class ControlPlane(_message.Message):
    __slots__ = ("role", "term", "leader_id", "leader_address", "store_kind", "writable", "store_detail", "controllers")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORE_KIND_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_FIELD_NUMBER: _ClassVar[int]
    STORE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    CONTROLLERS_FIELD_NUMBER: _ClassVar[int]
    role: str
    term: int
    leader_id: str
    leader_address: str
    store_kind: str
    writable: bool
    store_detail: str
    controllers: _containers.RepeatedCompositeFieldContainer[ControllerMember]
    def __init__(self, role: _Optional[str] = ..., term: _Optional[int] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., store_kind: _Optional[str] = ..., writable: _Optional[bool] = ..., store_detail: _Optional[str] = ..., controllers: _Optional[_Iterable[_Union[ControllerMember, _Mapping]]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeView]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeView, _Mapping]]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentView]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentView, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelView]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelView, _Mapping]]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("after_id", "follow", "limit", "object")
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    after_id: int
    follow: bool
    limit: int
    object: str
    def __init__(self, after_id: _Optional[int] = ..., follow: _Optional[bool] = ..., limit: _Optional[int] = ..., object: _Optional[str] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("agent", "messages", "options")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    options: _common_pb2.GenerationOptions
    def __init__(self, agent: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., options: _Optional[_Union[_common_pb2.GenerationOptions, _Mapping]] = ...) -> None: ...

class CredentialView(_message.Message):
    __slots__ = ("kind", "id", "description", "created_at", "expires_at", "revoked_at", "last_used_at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    description: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCredentialRequest(_message.Message):
    __slots__ = ("kind", "description", "ttl_s")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    kind: str
    description: str
    ttl_s: float
    def __init__(self, kind: _Optional[str] = ..., description: _Optional[str] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class CreateCredentialResponse(_message.Message):
    __slots__ = ("credential", "secret")
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    credential: CredentialView
    secret: str
    def __init__(self, credential: _Optional[_Union[CredentialView, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListCredentialsRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: str
    def __init__(self, kind: _Optional[str] = ...) -> None: ...

class ListCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[CredentialView]
    def __init__(self, credentials: _Optional[_Iterable[_Union[CredentialView, _Mapping]]] = ...) -> None: ...

class RevokeCredentialRequest(_message.Message):
    __slots__ = ("kind", "id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class RevokeCredentialResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class RevokeNodeRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeNodeResponse(_message.Message):
    __slots__ = ("certificates_revoked",)
    CERTIFICATES_REVOKED_FIELD_NUMBER: _ClassVar[int]
    certificates_revoked: int
    def __init__(self, certificates_revoked: _Optional[int] = ...) -> None: ...

class NodeMaintenanceRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class NodeMaintenanceResponse(_message.Message):
    __slots__ = ("changed", "node")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    node: NodeView
    def __init__(self, changed: _Optional[bool] = ..., node: _Optional[_Union[NodeView, _Mapping]] = ...) -> None: ...

class GetDrainProgressRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DrainTarget(_message.Message):
    __slots__ = ("node_id", "state")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: str
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class DrainItem(_message.Message):
    __slots__ = ("kind", "name", "state", "targets", "blocked")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    state: str
    targets: _containers.RepeatedCompositeFieldContainer[DrainTarget]
    blocked: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[DrainTarget, _Mapping]]] = ..., blocked: _Optional[str] = ...) -> None: ...

class DrainProgress(_message.Message):
    __slots__ = ("node_id", "state", "mark", "drained", "items", "waiting")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: _common_pb2.NodeState
    mark: str
    drained: bool
    items: _containers.RepeatedCompositeFieldContainer[DrainItem]
    waiting: str
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.NodeState, str]] = ..., mark: _Optional[str] = ..., drained: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[DrainItem, _Mapping]]] = ..., waiting: _Optional[str] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "kind", "url", "url_source", "state", "routes_generation", "routes_reported", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    URL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUTES_GENERATION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_REPORTED_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    url: str
    url_source: str
    state: str
    routes_generation: int
    routes_reported: bool
    address: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., url: _Optional[str] = ..., url_source: _Optional[str] = ..., state: _Optional[str] = ..., routes_generation: _Optional[int] = ..., routes_reported: _Optional[bool] = ..., address: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "routes_generation")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_GENERATION_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    routes_generation: int
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., routes_generation: _Optional[int] = ...) -> None: ...

class CreateAdminRequest(_message.Message):
    __slots__ = ("name", "csr_pem", "lifetime_days")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_DAYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    csr_pem: str
    lifetime_days: int
    def __init__(self, name: _Optional[str] = ..., csr_pem: _Optional[str] = ..., lifetime_days: _Optional[int] = ...) -> None: ...

class CreateAdminResponse(_message.Message):
    __slots__ = ("certificate_pem", "ca_pem", "cluster", "controllers", "admin")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CONTROLLERS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: str
    ca_pem: str
    cluster: str
    controllers: _containers.RepeatedScalarFieldContainer[str]
    admin: AdminCertificate
    def __init__(self, certificate_pem: _Optional[str] = ..., ca_pem: _Optional[str] = ..., cluster: _Optional[str] = ..., controllers: _Optional[_Iterable[str]] = ..., admin: _Optional[_Union[AdminCertificate, _Mapping]] = ...) -> None: ...

class RevokeAdminRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeAdminResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class ListAdminsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AdminCertificate(_message.Message):
    __slots__ = ("name", "serial", "issued_at", "expires_at", "revoked_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    serial: str
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., serial: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAdminsResponse(_message.Message):
    __slots__ = ("admins",)
    ADMINS_FIELD_NUMBER: _ClassVar[int]
    admins: _containers.RepeatedCompositeFieldContainer[AdminCertificate]
    def __init__(self, admins: _Optional[_Iterable[_Union[AdminCertificate, _Mapping]]] = ...) -> None: ...

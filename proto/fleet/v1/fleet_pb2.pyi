from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]

class ActionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_SOURCE_UNSPECIFIED: _ClassVar[ActionSource]
    ACTION_SOURCE_AUTONOMOUS: _ClassVar[ActionSource]
    ACTION_SOURCE_INTERVENTION: _ClassVar[ActionSource]
    ACTION_SOURCE_OFFLINE_DEMO: _ClassVar[ActionSource]

class EpisodeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EPISODE_KIND_UNSPECIFIED: _ClassVar[EpisodeKind]
    EPISODE_KIND_TRAINING: _ClassVar[EpisodeKind]
    EPISODE_KIND_EVALUATION: _ClassVar[EpisodeKind]
    EPISODE_KIND_DEMONSTRATION: _ClassVar[EpisodeKind]

class AckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATUS_UNSPECIFIED: _ClassVar[AckStatus]
    ACK_STATUS_STORED: _ClassVar[AckStatus]
    ACK_STATUS_DUPLICATE: _ClassVar[AckStatus]

class RobotMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROBOT_MODE_UNSPECIFIED: _ClassVar[RobotMode]
    ROBOT_MODE_IDLE: _ClassVar[RobotMode]
    ROBOT_MODE_AUTONOMOUS: _ClassVar[RobotMode]
    ROBOT_MODE_INTERVENTION: _ClassVar[RobotMode]
    ROBOT_MODE_PAUSED: _ClassVar[RobotMode]
    ROBOT_MODE_STOPPED: _ClassVar[RobotMode]
    ROBOT_MODE_DEMONSTRATING: _ClassVar[RobotMode]
    ROBOT_MODE_WAITING_FOR_HELP: _ClassVar[RobotMode]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_RAW: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
ACTION_SOURCE_UNSPECIFIED: ActionSource
ACTION_SOURCE_AUTONOMOUS: ActionSource
ACTION_SOURCE_INTERVENTION: ActionSource
ACTION_SOURCE_OFFLINE_DEMO: ActionSource
EPISODE_KIND_UNSPECIFIED: EpisodeKind
EPISODE_KIND_TRAINING: EpisodeKind
EPISODE_KIND_EVALUATION: EpisodeKind
EPISODE_KIND_DEMONSTRATION: EpisodeKind
ACK_STATUS_UNSPECIFIED: AckStatus
ACK_STATUS_STORED: AckStatus
ACK_STATUS_DUPLICATE: AckStatus
ROBOT_MODE_UNSPECIFIED: RobotMode
ROBOT_MODE_IDLE: RobotMode
ROBOT_MODE_AUTONOMOUS: RobotMode
ROBOT_MODE_INTERVENTION: RobotMode
ROBOT_MODE_PAUSED: RobotMode
ROBOT_MODE_STOPPED: RobotMode
ROBOT_MODE_DEMONSTRATING: RobotMode
ROBOT_MODE_WAITING_FOR_HELP: RobotMode

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("camera", "encoding", "height", "width", "channels", "data")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    camera: str
    encoding: ImageEncoding
    height: int
    width: int
    channels: int
    data: bytes
    def __init__(self, camera: _Optional[str] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class CameraSpec(_message.Message):
    __slots__ = ("name", "height", "width", "channels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    height: int
    width: int
    channels: int
    def __init__(self, name: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Embodiment(_message.Message):
    __slots__ = ("robot_type", "cameras", "state_dim", "action_dim", "control_hz")
    ROBOT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    STATE_DIM_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    CONTROL_HZ_FIELD_NUMBER: _ClassVar[int]
    robot_type: str
    cameras: _containers.RepeatedCompositeFieldContainer[CameraSpec]
    state_dim: int
    action_dim: int
    control_hz: float
    def __init__(self, robot_type: _Optional[str] = ..., cameras: _Optional[_Iterable[_Union[CameraSpec, _Mapping]]] = ..., state_dim: _Optional[int] = ..., action_dim: _Optional[int] = ..., control_hz: _Optional[float] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("name", "instruction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    instruction: str
    def __init__(self, name: _Optional[str] = ..., instruction: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("robot_id", "embodiment", "tasks", "client_version")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    EMBODIMENT_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    embodiment: Embodiment
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    client_version: str
    def __init__(self, robot_id: _Optional[str] = ..., embodiment: _Optional[_Union[Embodiment, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., client_version: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("session_id", "policy_version", "max_message_bytes", "heartbeat_interval_s")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    policy_version: int
    max_message_bytes: int
    heartbeat_interval_s: float
    def __init__(self, session_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("index", "timestamp", "images", "state", "action", "policy_action", "source", "reward", "done", "extras")
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_ACTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    index: int
    timestamp: float
    images: _containers.RepeatedCompositeFieldContainer[Image]
    state: Tensor
    action: Tensor
    policy_action: Tensor
    source: ActionSource
    reward: float
    done: bool
    extras: _containers.MessageMap[str, Tensor]
    def __init__(self, index: _Optional[int] = ..., timestamp: _Optional[float] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., state: _Optional[_Union[Tensor, _Mapping]] = ..., action: _Optional[_Union[Tensor, _Mapping]] = ..., policy_action: _Optional[_Union[Tensor, _Mapping]] = ..., source: _Optional[_Union[ActionSource, str]] = ..., reward: _Optional[float] = ..., done: bool = ..., extras: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class EpisodeOutcome(_message.Message):
    __slots__ = ("success", "total_reward", "num_steps", "termination", "float_summary")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REWARD_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_FIELD_NUMBER: _ClassVar[int]
    FLOAT_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    success: bool
    total_reward: float
    num_steps: int
    termination: str
    float_summary: FloatSummary
    def __init__(self, success: bool = ..., total_reward: _Optional[float] = ..., num_steps: _Optional[int] = ..., termination: _Optional[str] = ..., float_summary: _Optional[_Union[FloatSummary, _Mapping]] = ...) -> None: ...

class FloatSummary(_message.Message):
    __slots__ = ("ran", "final_index", "fired", "operator_continued", "threshold", "percentile", "dropped_chunks")
    RAN_FIELD_NUMBER: _ClassVar[int]
    FINAL_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_CONTINUED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ran: bool
    final_index: float
    fired: bool
    operator_continued: bool
    threshold: float
    percentile: float
    dropped_chunks: int
    def __init__(self, ran: bool = ..., final_index: _Optional[float] = ..., fired: bool = ..., operator_continued: bool = ..., threshold: _Optional[float] = ..., percentile: _Optional[float] = ..., dropped_chunks: _Optional[int] = ...) -> None: ...

class EpisodeChunk(_message.Message):
    __slots__ = ("robot_id", "episode_id", "sequence", "policy_version", "task", "instruction", "kind", "seed", "steps", "episode_end", "outcome")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_END_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    episode_id: str
    sequence: int
    policy_version: int
    task: str
    instruction: str
    kind: EpisodeKind
    seed: int
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    episode_end: bool
    outcome: EpisodeOutcome
    def __init__(self, robot_id: _Optional[str] = ..., episode_id: _Optional[str] = ..., sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., task: _Optional[str] = ..., instruction: _Optional[str] = ..., kind: _Optional[_Union[EpisodeKind, str]] = ..., seed: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., episode_end: bool = ..., outcome: _Optional[_Union[EpisodeOutcome, _Mapping]] = ...) -> None: ...

class ChunkAck(_message.Message):
    __slots__ = ("robot_id", "episode_id", "sequence", "status")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    episode_id: str
    sequence: int
    status: AckStatus
    def __init__(self, robot_id: _Optional[str] = ..., episode_id: _Optional[str] = ..., sequence: _Optional[int] = ..., status: _Optional[_Union[AckStatus, str]] = ...) -> None: ...

class WatchPolicyRequest(_message.Message):
    __slots__ = ("robot_id", "current_version")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    current_version: int
    def __init__(self, robot_id: _Optional[str] = ..., current_version: _Optional[int] = ...) -> None: ...

class PolicyFile(_message.Message):
    __slots__ = ("name", "size_bytes", "sha256", "header_bytes", "tensors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    HEADER_BYTES_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    sha256: str
    header_bytes: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorRange]
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., header_bytes: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorRange, _Mapping]]] = ...) -> None: ...

class TensorRange(_message.Message):
    __slots__ = ("name", "offset", "length", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    length: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class PolicyAnnouncement(_message.Message):
    __slots__ = ("version", "files", "published_at", "rollback", "note")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    version: int
    files: _containers.RepeatedCompositeFieldContainer[PolicyFile]
    published_at: float
    rollback: bool
    note: str
    def __init__(self, version: _Optional[int] = ..., files: _Optional[_Iterable[_Union[PolicyFile, _Mapping]]] = ..., published_at: _Optional[float] = ..., rollback: bool = ..., note: _Optional[str] = ...) -> None: ...

class FetchWeightsRequest(_message.Message):
    __slots__ = ("robot_id", "version", "file_name", "offset", "length")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    version: int
    file_name: str
    offset: int
    length: int
    def __init__(self, robot_id: _Optional[str] = ..., version: _Optional[int] = ..., file_name: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class WeightsChunk(_message.Message):
    __slots__ = ("version", "file_name", "offset", "data", "total_bytes", "sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    file_name: str
    offset: int
    data: bytes
    total_bytes: int
    sha256: str
    def __init__(self, version: _Optional[int] = ..., file_name: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("robot_id", "sent_at", "mode", "episode_id", "step_index", "policy_version", "task", "spooled_chunks", "missed_ticks", "float_index", "float_threshold", "episode_kind", "max_steps")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    MISSED_TICKS_FIELD_NUMBER: _ClassVar[int]
    FLOAT_INDEX_FIELD_NUMBER: _ClassVar[int]
    FLOAT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EPISODE_KIND_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    sent_at: float
    mode: RobotMode
    episode_id: str
    step_index: int
    policy_version: int
    task: str
    spooled_chunks: int
    missed_ticks: int
    float_index: float
    float_threshold: float
    episode_kind: EpisodeKind
    max_steps: int
    def __init__(self, robot_id: _Optional[str] = ..., sent_at: _Optional[float] = ..., mode: _Optional[_Union[RobotMode, str]] = ..., episode_id: _Optional[str] = ..., step_index: _Optional[int] = ..., policy_version: _Optional[int] = ..., task: _Optional[str] = ..., spooled_chunks: _Optional[int] = ..., missed_ticks: _Optional[int] = ..., float_index: _Optional[float] = ..., float_threshold: _Optional[float] = ..., episode_kind: _Optional[_Union[EpisodeKind, str]] = ..., max_steps: _Optional[int] = ...) -> None: ...

class HelpRequest(_message.Message):
    __slots__ = ("robot_id", "episode_id", "step_index", "policy_version", "reason", "score", "threshold", "holding")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    HOLDING_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    episode_id: str
    step_index: int
    policy_version: int
    reason: str
    score: float
    threshold: float
    holding: bool
    def __init__(self, robot_id: _Optional[str] = ..., episode_id: _Optional[str] = ..., step_index: _Optional[int] = ..., policy_version: _Optional[int] = ..., reason: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., holding: bool = ...) -> None: ...

class HelpCancelled(_message.Message):
    __slots__ = ("robot_id", "episode_id", "reason")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    episode_id: str
    reason: str
    def __init__(self, robot_id: _Optional[str] = ..., episode_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TakeoverEnded(_message.Message):
    __slots__ = ("robot_id", "episode_id", "operator_id", "step_index", "human_steps")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    HUMAN_STEPS_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    episode_id: str
    operator_id: str
    step_index: int
    human_steps: int
    def __init__(self, robot_id: _Optional[str] = ..., episode_id: _Optional[str] = ..., operator_id: _Optional[str] = ..., step_index: _Optional[int] = ..., human_steps: _Optional[int] = ...) -> None: ...

class CommandApplied(_message.Message):
    __slots__ = ("robot_id", "command_id", "accepted", "detail", "episode_id", "step_index", "applied_at")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    command_id: str
    accepted: bool
    detail: str
    episode_id: str
    step_index: int
    applied_at: float
    def __init__(self, robot_id: _Optional[str] = ..., command_id: _Optional[str] = ..., accepted: bool = ..., detail: _Optional[str] = ..., episode_id: _Optional[str] = ..., step_index: _Optional[int] = ..., applied_at: _Optional[float] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("robot_id", "image", "mode", "episode_id", "step_index", "sent_at")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    image: Image
    mode: RobotMode
    episode_id: str
    step_index: int
    sent_at: float
    def __init__(self, robot_id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., mode: _Optional[_Union[RobotMode, str]] = ..., episode_id: _Optional[str] = ..., step_index: _Optional[int] = ..., sent_at: _Optional[float] = ...) -> None: ...

class RobotMessage(_message.Message):
    __slots__ = ("heartbeat", "help", "takeover_ended", "help_cancelled", "command_applied", "preview")
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    TAKEOVER_ENDED_FIELD_NUMBER: _ClassVar[int]
    HELP_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_APPLIED_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    heartbeat: Heartbeat
    help: HelpRequest
    takeover_ended: TakeoverEnded
    help_cancelled: HelpCancelled
    command_applied: CommandApplied
    preview: Preview
    def __init__(self, heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., help: _Optional[_Union[HelpRequest, _Mapping]] = ..., takeover_ended: _Optional[_Union[TakeoverEnded, _Mapping]] = ..., help_cancelled: _Optional[_Union[HelpCancelled, _Mapping]] = ..., command_applied: _Optional[_Union[CommandApplied, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ...) -> None: ...

class TakeOver(_message.Message):
    __slots__ = ("operator_id", "remote", "assess")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    ASSESS_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    remote: bool
    assess: bool
    def __init__(self, operator_id: _Optional[str] = ..., remote: bool = ..., assess: bool = ...) -> None: ...

class Jog(_message.Message):
    __slots__ = ("operator_id", "dx", "dy", "dz", "gripper", "duration_s")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    DX_FIELD_NUMBER: _ClassVar[int]
    DY_FIELD_NUMBER: _ClassVar[int]
    DZ_FIELD_NUMBER: _ClassVar[int]
    GRIPPER_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    dx: float
    dy: float
    dz: float
    gripper: float
    duration_s: float
    def __init__(self, operator_id: _Optional[str] = ..., dx: _Optional[float] = ..., dy: _Optional[float] = ..., dz: _Optional[float] = ..., gripper: _Optional[float] = ..., duration_s: _Optional[float] = ...) -> None: ...

class HandBack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Pause(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Resume(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Stop(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetTask(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class ContinueEpisode(_message.Message):
    __slots__ = ("operator_id",)
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    def __init__(self, operator_id: _Optional[str] = ...) -> None: ...

class EndEpisode(_message.Message):
    __slots__ = ("operator_id",)
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    def __init__(self, operator_id: _Optional[str] = ...) -> None: ...

class SetFloatThreshold(_message.Message):
    __slots__ = ("task", "policy_version", "threshold", "percentile")
    TASK_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    task: str
    policy_version: int
    threshold: float
    percentile: float
    def __init__(self, task: _Optional[str] = ..., policy_version: _Optional[int] = ..., threshold: _Optional[float] = ..., percentile: _Optional[float] = ...) -> None: ...

class LearnerCommand(_message.Message):
    __slots__ = ("command_id", "robot_id", "take_over", "hand_back", "pause", "resume", "stop", "set_task", "continue_episode", "end_episode", "set_float_threshold", "jog")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    TAKE_OVER_FIELD_NUMBER: _ClassVar[int]
    HAND_BACK_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SET_TASK_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_EPISODE_FIELD_NUMBER: _ClassVar[int]
    END_EPISODE_FIELD_NUMBER: _ClassVar[int]
    SET_FLOAT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    JOG_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    robot_id: str
    take_over: TakeOver
    hand_back: HandBack
    pause: Pause
    resume: Resume
    stop: Stop
    set_task: SetTask
    continue_episode: ContinueEpisode
    end_episode: EndEpisode
    set_float_threshold: SetFloatThreshold
    jog: Jog
    def __init__(self, command_id: _Optional[str] = ..., robot_id: _Optional[str] = ..., take_over: _Optional[_Union[TakeOver, _Mapping]] = ..., hand_back: _Optional[_Union[HandBack, _Mapping]] = ..., pause: _Optional[_Union[Pause, _Mapping]] = ..., resume: _Optional[_Union[Resume, _Mapping]] = ..., stop: _Optional[_Union[Stop, _Mapping]] = ..., set_task: _Optional[_Union[SetTask, _Mapping]] = ..., continue_episode: _Optional[_Union[ContinueEpisode, _Mapping]] = ..., end_episode: _Optional[_Union[EndEpisode, _Mapping]] = ..., set_float_threshold: _Optional[_Union[SetFloatThreshold, _Mapping]] = ..., jog: _Optional[_Union[Jog, _Mapping]] = ...) -> None: ...

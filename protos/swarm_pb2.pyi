from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_DEFAULT: _ClassVar[Mode]
    MODE_DIRECT: _ClassVar[Mode]
    MODE_REFINE: _ClassVar[Mode]
MODE_DEFAULT: Mode
MODE_DIRECT: Mode
MODE_REFINE: Mode

class NodeMessage(_message.Message):
    __slots__ = ("hello", "proof", "heartbeat", "score", "chunk", "failed", "model_part")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    MODEL_PART_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    proof: Proof
    heartbeat: Heartbeat
    score: ScoreReply
    chunk: GenerateChunk
    failed: RequestFailed
    model_part: ModelPart
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., proof: _Optional[_Union[Proof, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., score: _Optional[_Union[ScoreReply, _Mapping]] = ..., chunk: _Optional[_Union[GenerateChunk, _Mapping]] = ..., failed: _Optional[_Union[RequestFailed, _Mapping]] = ..., model_part: _Optional[_Union[ModelPart, _Mapping]] = ...) -> None: ...

class HubMessage(_message.Message):
    __slots__ = ("challenge", "welcome", "score", "generate", "cancel", "fetch")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    FETCH_FIELD_NUMBER: _ClassVar[int]
    challenge: Challenge
    welcome: Welcome
    score: ScoreRequest
    generate: GenerateRequest
    cancel: Cancel
    fetch: FetchModel
    def __init__(self, challenge: _Optional[_Union[Challenge, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., score: _Optional[_Union[ScoreRequest, _Mapping]] = ..., generate: _Optional[_Union[GenerateRequest, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., fetch: _Optional[_Union[FetchModel, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("public_key", "join_token", "domain", "profile", "model_version", "capacity", "preset", "role", "base", "refines", "centroid", "words_sha256")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    REFINES_FIELD_NUMBER: _ClassVar[int]
    CENTROID_FIELD_NUMBER: _ClassVar[int]
    WORDS_SHA256_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    join_token: str
    domain: str
    profile: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    capacity: int
    preset: str
    role: str
    base: str
    refines: bool
    centroid: _containers.RepeatedScalarFieldContainer[float]
    words_sha256: str
    def __init__(self, public_key: _Optional[str] = ..., join_token: _Optional[str] = ..., domain: _Optional[str] = ..., profile: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ..., capacity: _Optional[int] = ..., preset: _Optional[str] = ..., role: _Optional[str] = ..., base: _Optional[str] = ..., refines: bool = ..., centroid: _Optional[_Iterable[float]] = ..., words_sha256: _Optional[str] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class Proof(_message.Message):
    __slots__ = ("signature",)
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    def __init__(self, signature: _Optional[bytes] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("node_id", "heartbeat_interval_ms", "flower_port")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    FLOWER_PORT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    heartbeat_interval_ms: int
    flower_port: int
    def __init__(self, node_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., flower_port: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("in_flight", "model_version")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    model_version: str
    def __init__(self, in_flight: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("request_id", "prompt", "deadline_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompt: str
    deadline_ms: int
    def __init__(self, request_id: _Optional[str] = ..., prompt: _Optional[str] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class ScoreReply(_message.Message):
    __slots__ = ("request_id", "loglik", "bits_per_byte", "confidence", "declined", "signature", "node_ms", "model_version", "similarity", "offset_loglik", "offset_similarity", "words_loglik", "offset_words")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LOGLIK_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_BYTE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    NODE_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_LOGLIK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    WORDS_LOGLIK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_WORDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    loglik: float
    bits_per_byte: float
    confidence: float
    declined: bool
    signature: bytes
    node_ms: float
    model_version: str
    similarity: float
    offset_loglik: float
    offset_similarity: float
    words_loglik: float
    offset_words: float
    def __init__(self, request_id: _Optional[str] = ..., loglik: _Optional[float] = ..., bits_per_byte: _Optional[float] = ..., confidence: _Optional[float] = ..., declined: bool = ..., signature: _Optional[bytes] = ..., node_ms: _Optional[float] = ..., model_version: _Optional[str] = ..., similarity: _Optional[float] = ..., offset_loglik: _Optional[float] = ..., offset_similarity: _Optional[float] = ..., words_loglik: _Optional[float] = ..., offset_words: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "prompt", "sampling", "draft", "answer_so_far")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_SO_FAR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompt: str
    sampling: SamplingParams
    draft: str
    answer_so_far: str
    def __init__(self, request_id: _Optional[str] = ..., prompt: _Optional[str] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., draft: _Optional[str] = ..., answer_so_far: _Optional[str] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_k", "top_p", "stop", "seed")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("request_id", "text", "tokens", "done", "signature", "node_ms", "model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    NODE_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    tokens: int
    done: bool
    signature: bytes
    node_ms: float
    model_version: str
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., tokens: _Optional[int] = ..., done: bool = ..., signature: _Optional[bytes] = ..., node_ms: _Optional[float] = ..., model_version: _Optional[str] = ...) -> None: ...

class RequestFailed(_message.Message):
    __slots__ = ("request_id", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    message: str
    def __init__(self, request_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class FetchModel(_message.Message):
    __slots__ = ("request_id", "model_version", "words_sha256")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORDS_SHA256_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_version: str
    words_sha256: str
    def __init__(self, request_id: _Optional[str] = ..., model_version: _Optional[str] = ..., words_sha256: _Optional[str] = ...) -> None: ...

class ModelPart(_message.Message):
    __slots__ = ("request_id", "name", "data", "last")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    data: bytes
    last: bool
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ..., data: _Optional[bytes] = ..., last: bool = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("prompt", "sampling", "domain", "mode", "draft")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    sampling: SamplingParams
    domain: str
    mode: Mode
    draft: str
    def __init__(self, prompt: _Optional[str] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., domain: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., draft: _Optional[str] = ...) -> None: ...

class AskReply(_message.Message):
    __slots__ = ("text", "switched", "result", "drafted")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SWITCHED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DRAFTED_FIELD_NUMBER: _ClassVar[int]
    text: str
    switched: Switched
    result: AskResult
    drafted: Drafted
    def __init__(self, text: _Optional[str] = ..., switched: _Optional[_Union[Switched, _Mapping]] = ..., result: _Optional[_Union[AskResult, _Mapping]] = ..., drafted: _Optional[_Union[Drafted, _Mapping]] = ...) -> None: ...

class Drafted(_message.Message):
    __slots__ = ("by", "text", "tokens")
    BY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    by: str
    text: str
    tokens: int
    def __init__(self, by: _Optional[str] = ..., text: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class Switched(_message.Message):
    __slots__ = ("from_node", "to_node", "reason")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    to_node: str
    reason: str
    def __init__(self, from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("node_id", "domain", "profile_similarity", "loglik", "posterior", "declined", "similarity", "evidence", "words_loglik")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROFILE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    LOGLIK_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_LOGLIK_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    domain: str
    profile_similarity: float
    loglik: float
    posterior: float
    declined: bool
    similarity: float
    evidence: float
    words_loglik: float
    def __init__(self, node_id: _Optional[str] = ..., domain: _Optional[str] = ..., profile_similarity: _Optional[float] = ..., loglik: _Optional[float] = ..., posterior: _Optional[float] = ..., declined: bool = ..., similarity: _Optional[float] = ..., evidence: _Optional[float] = ..., words_loglik: _Optional[float] = ...) -> None: ...

class AskResult(_message.Message):
    __slots__ = ("request_id", "node_id", "domain", "confidence", "candidates", "tokens", "latency_ms", "hub_overhead_ms", "charged_micro_credits", "mode", "drafted_by", "draft_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    HUB_OVERHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DRAFTED_BY_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    domain: str
    confidence: float
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    tokens: int
    latency_ms: float
    hub_overhead_ms: float
    charged_micro_credits: int
    mode: Mode
    drafted_by: str
    draft_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ..., domain: _Optional[str] = ..., confidence: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., tokens: _Optional[int] = ..., latency_ms: _Optional[float] = ..., hub_overhead_ms: _Optional[float] = ..., charged_micro_credits: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., drafted_by: _Optional[str] = ..., draft_tokens: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "domain", "model_version", "connected", "last_seen", "capacity", "in_flight", "reputation", "flower_node_id", "role", "refines")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    FLOWER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REFINES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    domain: str
    model_version: str
    connected: bool
    last_seen: str
    capacity: int
    in_flight: int
    reputation: float
    flower_node_id: int
    role: str
    refines: bool
    def __init__(self, node_id: _Optional[str] = ..., domain: _Optional[str] = ..., model_version: _Optional[str] = ..., connected: bool = ..., last_seen: _Optional[str] = ..., capacity: _Optional[int] = ..., in_flight: _Optional[int] = ..., reputation: _Optional[float] = ..., flower_node_id: _Optional[int] = ..., role: _Optional[str] = ..., refines: bool = ...) -> None: ...

class ListNodesReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class BalanceRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class BalanceReply(_message.Message):
    __slots__ = ("node_id", "micro_credits", "account")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    micro_credits: int
    account: str
    def __init__(self, node_id: _Optional[str] = ..., micro_credits: _Optional[int] = ..., account: _Optional[str] = ...) -> None: ...

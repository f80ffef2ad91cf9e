"""Typed configuration of the inference service and its rollout between MLflow aliases."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlsys_core.registry.lifecycle import CHALLENGER, CHAMPION

RolloutMode = Literal["single", "blue_green", "canary", "ab", "shadow"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CanaryConfig(_Frozen):
    """A share of records goes to the challenger until it misbehaves.

    The challenger is judged on its last ``window`` records once it has served
    ``min_requests``: an error rate above ``max_error_rate`` or a p99 latency above
    ``max_p99_ms`` rolls the canary back (all traffic to the champion). The latency is the
    challenger's own scoring time per model call, not queueing that slows both variants.
    """

    share: float = Field(default=0.1, ge=0, le=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float = Field(default=250.0, gt=0)
    min_requests: int = Field(default=50, ge=1)
    window: int = Field(default=500, ge=10)


class ABConfig(_Frozen):
    """Sticky split: a record's variant follows a hash of its ``key`` fields."""

    share: float = Field(default=0.5, ge=0, le=1, description="Challenger share.")
    key: list[str] | None = Field(
        default=None, description="Record fields hashed for the assignment; None: entity keys."
    )
    salt: str = Field(default="mlsys-ab", description="Change it to reshuffle the assignment.")


class ShadowConfig(_Frozen):
    """The challenger scores a copy of the traffic, off the response path."""

    share: float = Field(default=1.0, ge=0, le=1, description="Share of batches copied.")
    queue_batches: int = Field(
        default=1000, ge=1, description="Shadow backlog; copies beyond it are dropped."
    )


class RolloutConfig(_Frozen):
    """How traffic splits between the ``champion`` and ``challenger`` aliases.

    - single: the champion as loaded at start, never reloaded;
    - blue_green: the champion; moving its alias switches all traffic at once;
    - canary / ab / shadow: champion and challenger, as their sections say.

    Every mode but single polls the aliases every ``poll_interval_s`` and reloads a moved one
    in the background; the switch is one reference swap, so no request is dropped.
    """

    mode: RolloutMode = "blue_green"
    poll_interval_s: float = Field(default=5.0, gt=0)
    champion_alias: str = CHAMPION
    challenger_alias: str = CHALLENGER
    canary: CanaryConfig = CanaryConfig()
    ab: ABConfig = ABConfig()
    shadow: ShadowConfig = ShadowConfig()

    @property
    def uses_challenger(self) -> bool:
        return self.mode in ("canary", "ab", "shadow")


class LogConfig(_Frozen):
    """The prediction log is flushed by a background thread, never on the request path."""

    enabled: bool = True
    flush_rows: int = Field(default=2000, ge=1, description="Flush when this many rows wait.")
    flush_interval_s: float = Field(default=5.0, gt=0, description="...or this often.")


class ServeConfig(_Frozen):
    """Everything ``mlsys serve`` and ``create_app`` take besides the settings."""

    model_name: str | None = Field(default=None, description="None: the settings' model name.")
    spec: str | None = Field(
        default=None,
        description="Dataset reference (NAME, module:attr or file.py:attr); None: the spec "
        "the champion was trained with (its lineage), else the settings' dataset "
        "(MLSYS_DATASET). Given, it must be the champion's.",
    )
    deployment: str = Field(
        default="mlsys-serve", description="Name recorded in each served version's lineage."
    )
    rollout: RolloutConfig = RolloutConfig()
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Calibrated probability at which to predict 1."
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Larger bodies get 413.")
    max_json_depth: int = Field(
        default=16, ge=3, le=512, description="JSON nested deeper gets 400 (a batch is 3)."
    )
    max_batch_records: int = Field(default=1000, ge=1, description="Records per request.")
    micro_batch_records: int = Field(
        default=512,
        ge=1,
        description="Records of concurrent requests scored in one model call.",
    )
    max_queued_records: int = Field(
        default=10_000,
        ge=1,
        description="Records waiting for the scorer beyond which requests get 503 at once: "
        "under overload a fast refusal (a load balancer retries elsewhere) beats a queue "
        "whose wait grows without bound.",
    )
    online_features: bool = Field(
        default=True,
        description="Find the inputs a record omits (lookups, as-of joins, feature views) in "
        "the online store; off: the caller sends them, else they are imputed.",
    )
    feature_age_clock: Literal["event_time", "wall"] = Field(
        default="event_time",
        description="The request time a feature view's age is measured at (exported as "
        "mlsys_serving_feature_age_seconds; older than the view's ttl: missing): the "
        "record's event time, the time training reads its features as of (right for live "
        "callers that send the current time and for replayed history), or the server's clock.",
    )
    report_imputed: bool = Field(
        default=False,
        description="Add each prediction's count of inputs that reached the model missing "
        "(imputed_inputs); the prediction log always records it.",
    )
    miss_rate_warning: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Log a warning when more than this share of an online source's recent "
        "lookups find no row.",
    )
    miss_rate_window: int = Field(
        default=200, ge=1, description="How many recent lookups per source the rate is over."
    )
    log: LogConfig = LogConfig()

    @field_validator("spec")
    @classmethod
    def _resolvable(cls, ref: str | None) -> str | None:
        # Fail when the config is read (every replica, `serve-cluster --serve-config`), not
        # at the first request.
        if ref is not None:
            from mlsys_core.datasets import SpecReferenceError, resolve_spec  # noqa: PLC0415

            try:
                resolve_spec(ref)
            except SpecReferenceError as err:
                raise ValueError(str(err)) from None
        return ref

    torch_threads: int | None = Field(
        default=1,
        ge=1,
        description="Threads per model call: small batches gain nothing from more, and one "
        "process per core (replicas) scales better; None keeps torch's default.",
    )

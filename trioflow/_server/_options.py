"""`ServerOptions`: every option of the HTTP server, defined once.

Each option is an attrs field: its default, its type, its validation, and in its metadata a
one-line ``help`` (plus ``unit``, ``none``, ``flag`` and ``env`` where they apply). Everything
else is made from that one definition: the keywords of `WorkflowApp` and `serve`, the flags of
``trioflow serve`` (`trioflow._cli._options`), and the README's table of options, which a test
compares with `describe_default` and ``help``, so the three cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs

#: The names of this machine's loopback interface, which the server answers for by default.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

#: Runs a page of ``GET /runs`` lists unless ``?limit=`` says otherwise, and at most; also the
#: most handlers ``GET /handlers`` (``llama_compat``) lists.
LIST_LIMIT = 50
LIST_LIMIT_MAX = 500


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (0 <= value < math.inf):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _runs_limit(instance: ServerOptions, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an int >= 0, got {value!r}")
    # (0 needs a store that processes share: `ServerOptions.__attrs_post_init__`)


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (0 < value < math.inf):
        raise ValueError(f"{attribute.name} must be a number > 0, got {value!r}")


def _usable_token(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not value or value != value.strip()):
        raise ValueError("token must be a non-empty string without surrounding whitespace")


def _usable_node_id(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not (
        value and value == value.strip() and value.isprintable() and len(value) <= 200
    ):
        raise ValueError(
            "node_id must be a printable name of at most 200 characters, without surrounding "
            f"whitespace, got {value!r}"
        )


def node_name(options: ServerOptions) -> str:
    """The node id of this process: ``node_id``, or this host's name and the process id."""
    from .._store import node_name as default_node_name

    return options.node_id or default_node_name()


def _optional_grace(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        _non_negative(_, attribute, value)


def _store_url(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    from .._store import StoreError, check_url

    if not isinstance(value, str):
        raise TypeError(f"store must be a URL string, got {value!r}")
    try:
        check_url(value)
    except StoreError as error:
        raise ValueError(str(error)) from None


def _names(values: str | Iterable[str]) -> tuple[str, ...]:
    """A tuple of names; one string is one name (not its characters)."""
    return (values,) if isinstance(values, str) else tuple(values)


def _about(help: str, **more: str) -> dict[str, str]:
    """An option's metadata: ``help`` (one line, plain text: it is shown by ``--help`` and in
    the README), and optionally ``unit`` (how its default is shown), ``none`` (what None
    means), ``flag`` (the CLI flag, when not ``--`` + the name in kebab case) and ``env`` (an
    environment variable the CLI takes it from)."""
    return {"help": help, **more}


@attrs.frozen(kw_only=True)
class ServerOptions:
    """How a `WorkflowApp` serves; every option is also a keyword of `WorkflowApp` and `serve`,
    and a flag of ``trioflow serve`` (the name in kebab case)."""

    retain: int = attrs.field(
        default=1024,
        validator=_positive_int,
        metadata=_about("events kept per run for clients that join late or resume", unit="events"),
    )
    retain_bytes: int = attrs.field(
        default=4 * 1024 * 1024,
        validator=_positive_int,
        metadata=_about(
            "bytes of events kept per run (an event larger than this is kept alone)", unit="bytes"
        ),
    )
    max_clients_per_run: int = attrs.field(
        default=128,
        validator=_positive_int,
        metadata=_about(
            "clients streaming one run at once; another is answered 429", unit="clients"
        ),
    )
    hold_for_first_client: float = attrs.field(
        default=10.0,
        validator=_non_negative,
        metadata=_about(
            "seconds a new run keeps its first events for its first client, waiting if it has to",
            unit="s",
        ),
    )
    max_runs: int = attrs.field(
        default=64,
        validator=_runs_limit,
        metadata=_about(
            "runs running at once in this process; another start is answered 429 (on a "
            "PostgreSQL store it goes to a process with room; 0: this process runs none, an "
            "HTTP node)",
            unit="runs",
        ),
    )
    keep_finished: int = attrs.field(
        default=100,
        validator=_positive_int,
        metadata=_about(
            "finished runs whose status and events stay readable, oldest forgotten first",
            unit="runs",
        ),
    )
    keep_finished_bytes: int = attrs.field(
        default=64 * 1024 * 1024,
        validator=_positive_int,
        metadata=_about(
            "bytes of events and results kept for finished runs, oldest forgotten first",
            unit="bytes",
        ),
    )
    max_body: int = attrs.field(
        default=1024 * 1024,
        validator=_positive_int,
        metadata=_about("largest request body accepted, in bytes (413 beyond)", unit="bytes"),
    )
    token: str | None = attrs.field(
        default=None,
        validator=_usable_token,
        metadata=_about(
            "a secret every request must carry (Authorization: Bearer ..., or ?token=...)",
            env="TRIOFLOW_TOKEN",
        ),
    )
    allowed_hosts: tuple[str, ...] = attrs.field(
        default=LOOPBACK_NAMES,
        converter=_names,
        metadata=_about(
            "Host names answered for, against DNS rebinding ('*': any); serve() adds the name "
            "it binds to (any name for 0.0.0.0)",
            flag="--allowed-host",
        ),
    )
    cors_origins: tuple[str, ...] = attrs.field(
        default=(),
        converter=_names,
        metadata=_about(
            "browser origins allowed to call the API (CORS; '*': any)", flag="--cors-origin"
        ),
    )
    ping_interval: float = attrs.field(
        default=15.0,
        validator=_positive,
        metadata=_about(
            "seconds within which an idle stream notices a client that left; it carries a "
            "keep-alive (SSE ': ping', NDJSON a space) every half of it (> 0)",
            unit="s",
        ),
    )
    retry_ms: int = attrs.field(
        default=2000,
        validator=_positive_int,
        metadata=_about("the reconnection delay an SSE stream suggests to browsers", unit="ms"),
    )
    abandon_after: float | None = attrs.field(
        default=None,
        validator=_optional_grace,
        metadata=_about(
            "cancel a run once its last client has left and none came back for this many "
            "seconds (per run: POST .../runs?abandon_after=s)",
            unit="s",
            none="never",
        ),
    )
    shutdown_grace: float = attrs.field(
        default=5.0,
        validator=_non_negative,
        metadata=_about(
            "seconds a shutdown takes at most: runs end, clients get their last events, then "
            "connections still open are closed",
            unit="s",
        ),
    )
    body_timeout: float = attrs.field(
        default=30.0,
        validator=_positive,
        metadata=_about("seconds a request's body may take to arrive (408 beyond)", unit="s"),
    )
    keep_alive_timeout: float = attrs.field(
        default=5.0,
        validator=_positive,
        metadata=_about(
            "seconds serve() keeps a connection open with no request in progress (one whose "
            "head is still arriving counts as none)",
            unit="s",
        ),
    )
    max_connections: int = attrs.field(
        default=1000,
        validator=_positive_int,
        metadata=_about(
            "connections serve() keeps open at once; more wait in the listen backlog",
            unit="connections",
        ),
    )
    store: str = attrs.field(
        default="memory:",
        validator=_store_url,
        metadata=_about(
            "where runs are kept: memory: (in the process), sqlite:///runs.db (they outlive "
            "it; a relative path, sqlite:////abs/path.db for an absolute one) or "
            "postgresql://user@host/db (shared by any number of processes)",
            env="TRIOFLOW_STORE",
        ),
    )
    max_recoveries: int = attrs.field(
        default=3,
        validator=_positive_int,
        metadata=_about(
            "with a store: times a run is resumed after its process stopped while it ran; "
            "once more and it fails with WorkerLost (a step that crashes every process it "
            "runs in)",
            unit="recoveries",
        ),
    )
    node_id: str | None = attrs.field(
        default=None,
        validator=_usable_node_id,
        metadata=_about(
            "this process's name among the processes serving one store: GET /runs/{id} "
            "reports it as the run's node while this process runs the run",
            none="host:pid",
        ),
    )
    lease: float = attrs.field(
        default=15.0,
        validator=_positive,
        metadata=_about(
            "on a PostgreSQL store: seconds a process's hold on its runs lasts unless renewed "
            "(every third of it); a process that stops answering has its runs taken over by "
            "another after this (one that dies, at once)",
            unit="s",
        ),
    )
    unserved_grace: float = attrs.field(
        default=600.0,
        validator=_positive,
        metadata=_about(
            "on a PostgreSQL store: seconds a run waits for a process that serves its "
            "workflow with the graph it started on (a deploy changed or removed it) before a "
            "process that cannot run it fails it, saying why",
            unit="s",
        ),
    )
    llama_compat: bool = attrs.field(
        default=False,
        validator=attrs.validators.instance_of(bool),
        metadata=_about(
            "also serve llama-agents-server's routes, for LlamaIndex clients "
            "(llama-agents-client, @llamaindex/workflows-client)"
        ),
    )
    hide_tracebacks: bool = attrs.field(
        default=False,
        validator=attrs.validators.instance_of(bool),
        metadata=_about(
            "send failures without their traceback text (for a server the public can reach: "
            "a traceback shows code paths and values)"
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.max_runs == 0 and not self.store.lower().startswith(("postgresql:", "postgres:")):
            raise ValueError(
                "max_runs=0 (a process that runs no runs, an HTTP node) needs a store that "
                f"processes share, where others run them (postgresql://...); got {self.store!r}"
            )


def describe_default(option: attrs.Attribute[Any]) -> str:
    """How ``option``'s default reads (``1,024 events``, ``1 MiB``, ``never``): in
    ``trioflow serve --help`` and in the README's table."""
    value = option.default
    unit = option.metadata.get("unit", "")
    if value is None:
        return str(option.metadata.get("none", "none"))
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return ", ".join(value) if value else "none"
    if unit == "bytes":
        return _bytes(value)
    number = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return f"{number} {unit}" if unit else number


def _bytes(count: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count % size == 0:
            return f"{count // size:,} {unit}"
    return f"{count:,} bytes"

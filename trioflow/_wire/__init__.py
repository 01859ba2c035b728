"""The JSON wire format shared by the HTTP server and the command line.

Events and results go out through `_encode` (its encoders never raise: a step may stream any
object; only `dumps` refuses the one value with no JSON text, an int too long to convert, which
`mark_unencodable` replaces); request bodies are parsed strictly by `loads`, and start events
and events sent in are decoded strictly, in `_decode`; a workflow's graph is described in
`_describe`, and as JSON Schemas in `_schema`; the names and fields of types that all of them
use are read in `_typeinfo`. The layers above import the format from this package only.
"""

from ._decode import (
    BadJsonError,
    WireError,
    decode_event,
    decode_start_event,
    loads,
    sendable_event_types,
)
from ._describe import describe_workflow, described_event_types
from ._encode import (
    EncodeError,
    dumps,
    encode_envelope,
    encode_event_data,
    encode_exception,
    encode_value,
    envelope_data,
    mark_unencodable,
)
from ._mentions import mentioned_event_types
from ._representation import direction_of, get_workflow_representation, model_schema
from ._schema import JsonSchemas, any_envelope, event_schema, streamed_event_types
from ._typeinfo import event_bases, field_types, qualified_name, takes_free_form_fields, type_name

__all__ = [
    "BadJsonError",
    "EncodeError",
    "JsonSchemas",
    "WireError",
    "any_envelope",
    "decode_event",
    "decode_start_event",
    "describe_workflow",
    "described_event_types",
    "direction_of",
    "dumps",
    "encode_envelope",
    "encode_event_data",
    "encode_exception",
    "encode_value",
    "envelope_data",
    "event_bases",
    "event_schema",
    "field_types",
    "get_workflow_representation",
    "loads",
    "mark_unencodable",
    "mentioned_event_types",
    "model_schema",
    "qualified_name",
    "sendable_event_types",
    "streamed_event_types",
    "takes_free_form_fields",
    "type_name",
]

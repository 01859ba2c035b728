"""The JSON wire format shared by the HTTP server and the command line.

Events and results go out through `_encode` (nothing there raises: a step may stream any
object); start events and events sent in are decoded strictly in `_decode`; a workflow's graph
is described in `_describe`; the names and fields of types that all three use are read in
`_typeinfo`. The layers above import the format from this package only.
"""

from ._decode import WireError, decode_event, decode_start_event, sendable_event_types
from ._describe import describe_workflow
from ._encode import (
    dumps,
    encode_envelope,
    encode_event_data,
    encode_exception,
    encode_value,
)
from ._typeinfo import field_types, qualified_name, takes_free_form_fields, type_name

__all__ = [
    "WireError",
    "decode_event",
    "decode_start_event",
    "describe_workflow",
    "dumps",
    "encode_envelope",
    "encode_event_data",
    "encode_exception",
    "encode_value",
    "field_types",
    "qualified_name",
    "sendable_event_types",
    "takes_free_form_fields",
    "type_name",
]

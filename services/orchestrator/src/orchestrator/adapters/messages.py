"""Plain data to protobuf messages and back, as `json_format` does it, without its cost on the hot path.

Every step call turns its request (plain data) into a message and its response back into plain data.
`json_format.ParseDict` and `MessageToDict` handle every protobuf type through a generic, reflective walk
that costs more than the rest of a call's Python. The contracts use a handful of field kinds: strings,
32-bit integers, booleans, enums, nested and repeated messages. For those, a message is built from
exactly typed values by its constructor and read back through `ListFields`, which yields exactly the
fields `MessageToDict` prints (set or non-default) with the same values.

Anything else goes the generic way, so the answer is always `json_format`'s own: a field of another kind
(64-bit integers print as strings, floats, bytes, maps, well-known types), a value that is not exactly
of its field's type (`ParseDict` also accepts "5" or 5.0 for an integer, and refuses True), a JSON name
instead of the proto name, an unknown field, or a null (its errors, too, are `json_format.ParseError`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_INT32: Final = frozenset({FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32})
_UINT32: Final = frozenset({FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32})
_SIMPLE: Final = _INT32 | _UINT32 | {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL}


class _Generic(Exception):
    """This value (or message kind) is for json_format."""


@cache
def _simple(descriptor: Any) -> bool:
    """Every field of the message (and of the messages it holds) is of a kind converted here."""
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.GetOptions().map_entry:
        return False
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if not _simple(field.message_type):
                return False
        elif field.type != FieldDescriptor.TYPE_ENUM and field.type not in _SIMPLE:
            return False
    return True


def _exact(kind: type, low: int | None = None, high: int | None = None) -> Callable[[Any], bool]:
    def accepts(value: Any) -> bool:
        return type(value) is kind and (low is None or low <= value < high)  # type: ignore[operator]

    return accepts


_ACCEPTS: Final[dict[int, Callable[[Any], bool]]] = {
    FieldDescriptor.TYPE_STRING: _exact(str),
    FieldDescriptor.TYPE_BOOL: _exact(bool),
    **dict.fromkeys(_INT32, _exact(int, -(2**31), 2**31)),
    **dict.fromkeys(_UINT32, _exact(int, 0, 2**32)),
}


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_name.get(value) if type(value) is str else None  # type: ignore[union-attr]
        if known is not None:
            return known.number
    elif _ACCEPTS[field.type](value):
        return value
    raise _Generic


def _build(descriptor: Any, cls: type[Message], fields: Any) -> Message:
    if type(fields) is not dict:
        raise _Generic
    arguments: dict[str, Any] = {}
    for name, value in fields.items():
        field = descriptor.fields_by_name.get(name)
        if field is None or value is None:
            raise _Generic
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            nested: Any = field.message_type
            inner = message_factory.GetMessageClass(nested)
            if field.is_repeated:
                if type(value) is not list:
                    raise _Generic
                arguments[name] = [_build(nested, inner, item) for item in value]
            else:
                arguments[name] = _build(nested, inner, value)
        elif field.is_repeated:
            if type(value) is not list:
                raise _Generic
            arguments[name] = [_scalar(field, item) for item in value]
        else:
            arguments[name] = _scalar(field, value)
    return cls(**arguments)


def to_message(fields: dict[str, Any], cls: type[Message]) -> Message:
    """`json_format.ParseDict(fields, cls())`.

    Raises:
        json_format.ParseError: what ParseDict raises for these fields.
    """
    if _simple(cls.DESCRIPTOR):
        try:
            return _build(cls.DESCRIPTOR, cls, fields)
        except _Generic:
            pass
    return json_format.ParseDict(fields, cls())


def _plain(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _fields(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)  # type: ignore[union-attr]
        return value if known is None else known.name
    return value


def _fields(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.is_repeated:
            out[field.name] = [_plain(field, item) for item in value]
        else:
            out[field.name] = _plain(field, value)
    return out


def to_dict(message: Message) -> dict[str, Any]:
    """`json_format.MessageToDict(message, preserving_proto_field_name=True)`."""
    if _simple(message.DESCRIPTOR):
        return _fields(message)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)

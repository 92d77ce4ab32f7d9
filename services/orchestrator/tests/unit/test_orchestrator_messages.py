"""The fast message conversions answer exactly what json_format answers, for every contract message."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.adapters import messages
from orchestrator.adapters.participants import METHODS
from sagaline_contracts.inventory.v1 import inventory_pb2
from sagaline_contracts.order.v1 import order_pb2
from sagaline_contracts.payment.v1 import payment_pb2

REQUESTS = sorted({m.request for m in METHODS.values()}, key=lambda c: c.DESCRIPTOR.full_name)
RESPONSES = [
    getattr(module, name)
    for module in (order_pb2, payment_pb2, inventory_pb2)
    for name in module.DESCRIPTOR.message_types_by_name
    if name.endswith("Response")
]


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _fields(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        return st.sampled_from(names) | st.integers(-1, len(names) + 1)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=8) | st.integers(-3, 3)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans() | st.integers(0, 1)
    # integers: in and out of range, and the other spellings ParseDict takes or refuses
    return (
        st.integers(-(2**31), 2**31 - 1)
        | st.integers(-(2**40), 2**40)
        | st.booleans()
        | st.sampled_from(["7", "x", 3.0, 2.5])
    )


def _fields(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    if depth > 2:
        return st.just({})
    entries: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        one = _value(field, depth)
        entries[field.name] = st.lists(one, max_size=3) if field.is_repeated else one
    extras = st.sampled_from([{}, {}, {}, {"no_such_field": "x"}, {descriptor.fields[0].json_name: None}])
    return st.fixed_dictionaries({}, optional=entries).flatmap(lambda d: extras.map(lambda e: {**d, **e}))


def _generic(fields: dict[str, Any], cls: type[Message]) -> Message | type[Exception]:
    try:
        return json_format.ParseDict(fields, cls())
    except json_format.ParseError:
        return json_format.ParseError


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.DESCRIPTOR.name)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_request_built_from_plain_data_is_the_one_parse_dict_builds(cls: type[Message], data: st.DataObject) -> None:
    fields = data.draw(_fields(cls.DESCRIPTOR))
    expected = _generic(fields, cls)

    if expected is json_format.ParseError:
        with pytest.raises(json_format.ParseError):
            messages.to_message(fields, cls)
    else:
        assert messages.to_message(fields, cls) == expected


@pytest.mark.parametrize("cls", RESPONSES, ids=lambda c: c.DESCRIPTOR.name)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_response_reads_back_as_message_to_dict_reads_it(cls: type[Message], data: st.DataObject) -> None:
    built = _generic(data.draw(_fields(cls.DESCRIPTOR)), cls)
    if built is json_format.ParseError:
        return  # not a message the participant could have sent; the requests test covers the refusal
    assert isinstance(built, Message)

    assert messages.to_dict(built) == json_format.MessageToDict(built, preserving_proto_field_name=True)


def test_every_contract_message_takes_the_fast_path() -> None:
    # If a contract grows a field of another kind, the conversions stay right (generic path) but slower:
    # this says so, so the choice is deliberate.
    assert all(messages._simple(cls.DESCRIPTOR) for cls in [*REQUESTS, *RESPONSES])


def test_a_message_with_a_64_bit_integer_goes_the_generic_way() -> None:
    from google.protobuf import wrappers_pb2

    value = wrappers_pb2.Int64Value(value=5)

    assert messages.to_dict(value) == json_format.MessageToDict(value, preserving_proto_field_name=True)

"""``parse_params``: msgspec validation failures become Stripe's own error messages."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.api.forms import decode_form
from meterd.api.meters_v1 import CreateMeterParams, ListMetersParams, UpdateMeterParams
from meterd.api.params import parse_params
from meterd.errors import InvalidRequestError

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=10)]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Tier(msgspec.Struct, forbid_unknown_fields=True):
    up_to: int | Literal["inf"]
    unit_amount: int | msgspec.UnsetType = msgspec.UNSET


class Options(msgspec.Struct, forbid_unknown_fields=True):
    mode: Literal["fast", "slow"]
    label: Name | msgspec.UnsetType = msgspec.UNSET


class Thing(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    options: Options
    count: int | msgspec.UnsetType = msgspec.UNSET
    enabled: bool = False
    tags: list[str] = []
    tiers: list[Tier] = []
    color: Color = Color.RED
    size: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1


def _meter(**changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "display_name": "API requests",
        "event_name": "api_request",
        "default_aggregation": {"formula": "sum"},
    }
    params.update(changes)
    return params


def _error(data: Any, into: type[Any], *, from_form: bool = True) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        parse_params(data, into, from_form=from_form)
    error = info.value
    assert type(error) is InvalidRequestError
    assert error.http_status == 400
    return error


# --- success -----------------------------------------------------------------------------


def test_create_meter_params_from_a_form() -> None:
    form = decode_form(
        "display_name=API+requests&event_name=api_request&default_aggregation[formula]=sum"
        "&customer_mapping[type]=by_id&customer_mapping[event_payload_key]=cus"
        "&value_settings[event_payload_key]=tokens&event_time_window=hour&expand[]=x"
    )
    params = parse_params(form, CreateMeterParams, from_form=True)
    assert params.display_name == "API requests"
    assert params.event_name == "api_request"
    assert params.default_aggregation.formula == "sum"
    assert not isinstance(params.customer_mapping, msgspec.UnsetType)
    assert params.customer_mapping.event_payload_key == "cus"
    assert params.customer_mapping.type == "by_id"
    assert not isinstance(params.value_settings, msgspec.UnsetType)
    assert params.value_settings.event_payload_key == "tokens"
    assert params.event_time_window == "hour"
    assert params.expand == ["x"]


def test_optional_fields_stay_unset() -> None:
    params = parse_params(_meter(), CreateMeterParams, from_form=True)
    assert params.customer_mapping is msgspec.UNSET
    assert params.value_settings is msgspec.UNSET
    assert params.event_time_window is msgspec.UNSET
    assert parse_params({}, UpdateMeterParams, from_form=True).display_name is msgspec.UNSET


def test_form_strings_are_converted() -> None:
    form = decode_form(
        "name=n&options[mode]=fast&count=10&enabled=true&tags[0]=a&tags[1]=b"
        "&tiers[0][up_to]=1000&tiers[0][unit_amount]=5&color=blue&size=5"
    )
    thing = parse_params(form, Thing, from_form=True)
    assert thing.count == 10
    assert thing.enabled is True
    assert thing.tags == ["a", "b"]
    assert thing.tiers == [Tier(up_to=1000, unit_amount=5)]
    assert thing.color is Color.BLUE
    assert thing.size == 5


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False)])
def test_form_booleans(text: str, value: bool) -> None:
    thing = parse_params(
        {"name": "n", "options": {"mode": "fast"}, "enabled": text}, Thing, from_form=True
    )
    assert thing.enabled is value


def test_list_params_from_a_query() -> None:
    params = parse_params(
        decode_form("limit=3&status=inactive&starting_after=mtr_1"),
        ListMetersParams,
        from_form=True,
    )
    assert params.limit == 3
    assert params.status == "inactive"
    assert params.starting_after == "mtr_1"
    assert params.ending_before is msgspec.UNSET


def test_json_keeps_json_types() -> None:
    thing = parse_params(
        {"name": "n", "options": {"mode": "slow"}, "count": 3, "enabled": True},
        Thing,
        from_form=False,
    )
    assert (thing.count, thing.enabled, thing.options.mode) == (3, True, "slow")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("count", "10", "Invalid integer: 10"),
        ("enabled", "true", "Invalid boolean: true"),
        ("name", 5, "Invalid string: 5"),
        ("tags", "a", "Invalid array: a"),
    ],
)
def test_json_rejects_strings_for_other_types(field: str, value: Any, message: str) -> None:
    data = {"name": "n", "options": {"mode": "fast"}, field: value}
    error = _error(data, Thing, from_form=False)
    assert error.message == message
    assert error.param == field


def test_json_limit_must_be_a_number() -> None:
    assert parse_params({"limit": 10}, ListMetersParams, from_form=False).limit == 10
    error = _error({"limit": "10"}, ListMetersParams, from_form=False)
    assert (error.message, error.param) == ("Invalid integer: 10", "limit")


# --- missing and unknown -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (_meter(default_aggregation={}), "default_aggregation[formula]"),
        ({"display_name": "d", "event_name": "e"}, "default_aggregation"),
        (_meter(display_name=msgspec.UNSET), "display_name"),
        (_meter(customer_mapping={"type": "by_id"}), "customer_mapping[event_payload_key]"),
        (_meter(value_settings={}), "value_settings[event_payload_key]"),
    ],
)
def test_missing_param(data: dict[str, Any], param: str) -> None:
    data = {k: v for k, v in data.items() if v is not msgspec.UNSET}
    error = _error(data, CreateMeterParams)
    assert error.code == "parameter_missing"
    assert error.message == f"Missing required param: {param}."
    assert error.param == param


def test_missing_formula_message() -> None:
    error = _error(_meter(default_aggregation={}), CreateMeterParams)
    assert error.message == "Missing required param: default_aggregation[formula]."


def test_missing_in_a_list_element() -> None:
    data = {"name": "n", "options": {"mode": "fast"}, "tiers": [{"up_to": "1"}, {}]}
    error = _error(data, Thing)
    assert error.code == "parameter_missing"
    assert error.param == "tiers[1][up_to]"
    assert error.message == "Missing required param: tiers[1][up_to]."


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (
            _meter(customer_mapping={"type": "by_id", "event_payload_key": "k", "foo": "1"}),
            "customer_mapping[foo]",
        ),
        (_meter(customer="cus_1"), "customer"),
        (_meter(default_aggregation={"formula": "sum", "x": "1"}), "default_aggregation[x]"),
    ],
)
def test_unknown_param(data: dict[str, Any], param: str) -> None:
    error = _error(data, CreateMeterParams)
    assert error.code == "parameter_unknown"
    assert error.message == f"Received unknown parameter: {param}"
    assert error.param == param


def test_unknown_param_in_a_list_element() -> None:
    data = {"name": "n", "options": {"mode": "fast"}, "tiers": [{"up_to": "1", "flat": "2"}]}
    error = _error(data, Thing)
    assert error.message == "Received unknown parameter: tiers[0][flat]"
    assert error.param == "tiers[0][flat]"


def test_unknown_list_param() -> None:
    error = _error({"limit": "3", "created": "1"}, ListMetersParams)
    assert (error.code, error.param) == ("parameter_unknown", "created")


# --- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (_meter(display_name=""), "display_name"),
        (_meter(event_name=""), "event_name"),
        (_meter(default_aggregation={"formula": ""}), "default_aggregation[formula]"),
        (
            _meter(customer_mapping={"type": "by_id", "event_payload_key": ""}),
            "customer_mapping[event_payload_key]",
        ),
        (_meter(event_time_window=""), "event_time_window"),
    ],
)
def test_empty_string(data: dict[str, Any], param: str) -> None:
    error = _error(data, CreateMeterParams)
    assert error.code == "parameter_invalid_empty"
    assert error.param == param
    assert error.message.startswith(f"You passed an empty string for '{param}'.")


def test_empty_string_for_an_int() -> None:
    error = _error({"limit": ""}, ListMetersParams)
    assert (error.code, error.param) == ("parameter_invalid_empty", "limit")


def test_string_too_long() -> None:
    error = _error(_meter(display_name="x" * 251), CreateMeterParams)
    assert error.code is None
    assert error.param == "display_name"
    assert error.message.startswith("Invalid string: ")
    assert error.message.endswith("must be at most 250 characters")
    assert error.message == f"Invalid string: {'x' * 20}...; must be at most 250 characters"


def test_string_at_the_limit_is_accepted() -> None:
    params = parse_params(_meter(display_name="x" * 250), CreateMeterParams, from_form=True)
    assert len(params.display_name) == 250


def test_nested_string_too_long() -> None:
    data = _meter(value_settings={"event_payload_key": "k" * 101})
    error = _error(data, CreateMeterParams)
    assert error.param == "value_settings[event_payload_key]"
    assert error.message.endswith("must be at most 100 characters")


def test_short_value_is_shown_whole() -> None:
    error = _error({"name": "abcdefghijk", "options": {"mode": "fast"}}, Thing)
    assert error.message == "Invalid string: abcdefghijk; must be at most 10 characters"


def test_bad_enum() -> None:
    error = _error(_meter(default_aggregation={"formula": "max"}), CreateMeterParams)
    assert error.code is None
    assert error.param == "default_aggregation[formula]"
    assert (
        error.message == "Invalid default_aggregation[formula]: must be one of count, last, or sum"
    )


@pytest.mark.parametrize(
    ("data", "into", "message"),
    [
        ({"status": "gone"}, ListMetersParams, "Invalid status: must be one of active or inactive"),
        (
            _meter(event_time_window="week"),
            CreateMeterParams,
            "Invalid event_time_window: must be one of day or hour",
        ),
        (
            _meter(customer_mapping={"type": "by_email", "event_payload_key": "k"}),
            CreateMeterParams,
            "Invalid customer_mapping[type]: must be one of by_id",
        ),
        (
            {"name": "n", "options": {"mode": "medium"}},
            Thing,
            "Invalid options[mode]: must be one of fast or slow",
        ),
        (
            {"name": "n", "options": {"mode": "fast"}, "color": "green"},
            Thing,
            "Invalid color: must be one of red or blue",
        ),
        (
            {"name": "n", "options": {"mode": "fast"}, "tiers": [{"up_to": "lots"}]},
            Thing,
            "Invalid tiers[0][up_to]: must be one of inf",
        ),
    ],
)
def test_enum_messages(data: dict[str, Any], into: type[Any], message: str) -> None:
    error = _error(data, into)
    assert error.message == message
    assert error.code is None


def test_bad_integer() -> None:
    error = _error({"limit": "abc"}, ListMetersParams)
    assert (error.message, error.param, error.code) == ("Invalid integer: abc", "limit", None)


def test_bad_integer_in_a_list_element() -> None:
    data = {"name": "n", "options": {"mode": "fast"}, "tiers": [{"up_to": "1", "unit_amount": "x"}]}
    error = _error(data, Thing)
    assert (error.message, error.param) == ("Invalid integer: x", "tiers[0][unit_amount]")


def test_bad_boolean() -> None:
    error = _error({"name": "n", "options": {"mode": "fast"}, "enabled": "yes"}, Thing)
    assert (error.message, error.param) == ("Invalid boolean: yes", "enabled")


def test_hash_given_for_a_scalar() -> None:
    error = _error({"limit": {"a": "1"}}, ListMetersParams)
    assert (error.message, error.param) == ("Invalid integer: limit was given as a hash", "limit")


def test_scalar_given_for_a_hash() -> None:
    error = _error(_meter(default_aggregation="sum"), CreateMeterParams)
    assert (error.message, error.param) == ("Invalid hash: sum", "default_aggregation")


def test_hash_given_for_a_list() -> None:
    error = _error({"expand": {"a": "b"}}, ListMetersParams)
    assert (error.message, error.param) == ("Invalid array: expand was given as a hash", "expand")


def test_hash_given_for_a_list_item() -> None:
    error = _error({"expand": ["x", {"a": "b"}]}, ListMetersParams)
    assert error.param == "expand[1]"
    assert error.message == "Invalid string: expand[1] was given as a hash"


def test_number_out_of_bounds() -> None:
    error = _error({"name": "n", "options": {"mode": "fast"}, "size": "6"}, Thing)
    assert error.param == "size"
    assert error.message.startswith("Invalid size: ")


def test_long_bad_value_is_truncated() -> None:
    error = _error({"limit": "z" * 100}, ListMetersParams)
    assert error.message == f"Invalid integer: {'z' * 40}..."


@pytest.mark.parametrize("data", [[], ["a"], "a", None, 5])
def test_params_must_be_a_hash(data: Any) -> None:
    error = _error(data, ListMetersParams, from_form=False)
    assert error.message == "Invalid request: the parameters must be a hash (an object)."
    assert error.param is None


# --- fuzz --------------------------------------------------------------------------------

form_values = st.recursive(
    st.text(max_size=12) | st.sampled_from(["", "true", "10", "sum", "inf", "x" * 300]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "options",
                    "mode",
                    "label",
                    "count",
                    "enabled",
                    "tags",
                    "tiers",
                    "up_to",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "options", "mode", "count", "tiers"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=250, deadline=None)
@given(form_values, st.sampled_from([Thing, CreateMeterParams, ListMetersParams]))
def test_fuzz_form_values_raise_only_invalid_request(data: Any, into: type[Any]) -> None:
    try:
        parse_params(data, into, from_form=True)
    except InvalidRequestError as error:
        assert error.http_status == 400
        assert error.message


@settings(max_examples=250, deadline=None)
@given(json_values, st.sampled_from([Thing, CreateMeterParams, ListMetersParams]))
def test_fuzz_json_values_raise_only_invalid_request(data: Any, into: type[Any]) -> None:
    try:
        parse_params(data, into, from_form=False)
    except InvalidRequestError as error:
        assert error.http_status == 400
        assert error.message


class Payload(msgspec.Struct, forbid_unknown_fields=True):
    payload: dict[str, Annotated[str, msgspec.Meta(max_length=5)]]


@pytest.mark.parametrize(
    ("payload", "from_form", "param"),
    [
        ({"a": "ok", "b": "too long"}, True, "payload[b]"),
        ({"a": "too long", "b": "ok"}, True, "payload[a]"),
        ({"a": "ok", "b": 3}, False, "payload[b]"),
        ({"a": None, "b": "ok"}, False, "payload[a]"),
    ],
)
def test_a_bad_dict_value_is_named_by_its_key(
    payload: dict[str, Any], from_form: bool, param: str
) -> None:
    """msgspec says only ``$.payload[...]``; the param must still name the offending key."""
    with pytest.raises(InvalidRequestError) as caught:
        parse_params({"payload": payload}, Payload, from_form=from_form)
    assert caught.value.param == param
    assert "{" not in caught.value.message

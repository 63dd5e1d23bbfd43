"""File names derived from configuration values stay inside the folder they are joined to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.files import safe_name


@pytest.mark.parametrize(
    "value",
    ["../../etc/passwd", "/abs/path", "a/b", "..", ".hidden", "name with spaces", "ünïcode", ""],
)
def test_safe_name_is_one_harmless_component(value, tmp_path):
    name = safe_name(value)
    assert name and "/" not in name and "\\" not in name
    assert not name.startswith(".") and ".." not in name
    joined = (tmp_path / name).resolve()
    assert joined.parent == tmp_path.resolve()


def test_safe_name_keeps_ordinary_names():
    assert safe_name("default") == "default"
    assert safe_name("relu_512-256.v2") == "relu_512-256.v2"
    assert safe_name(Path("best")) == "best"

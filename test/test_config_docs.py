"""Every configuration field is documented at the field (a docstring under it), and that text is what
``lang3d config --describe`` and the declared ROS parameters show; ``Literal`` choices are enforced."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import pytest

from lang3d_ros.config import Lang3DConfig, field_docs, flat_parameters, literal_choices
from lang3d_ros.config_base import ConfigError, from_mapping


def _config_classes(cls, seen=None):
    seen = set() if seen is None else seen
    if cls in seen:
        return seen
    seen.add(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            _config_classes(hints[f.name], seen)
    return seen


def test_every_field_of_every_config_class_has_a_docstring():
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in _config_classes(Lang3DConfig)
        for f in dataclasses.fields(cls)
        if len(field_docs(cls).get(f.name, "")) < 8
    ]
    assert not missing, f"fields without a description (write a docstring under each): {missing}"


def test_describe_shows_the_field_docstrings():
    params = {name: desc for name, _, desc in flat_parameters(Lang3DConfig())}
    assert len(params) > 150
    assert all(params.values()), [n for n, d in params.items() if not d]
    assert "association" in params["fusion.dist_threshold_m"].lower()


@dataclass
class _Demo:
    mode: typing.Literal["fast", "exact"] = "fast"
    """How to run."""
    level: typing.Literal["subpart", "part", "whole"] | None = None
    """Optional level."""
    # a plain comment is not a description
    size: int = 3
    """Cells per side."""


def test_field_docs_reads_docstrings_not_comments_and_literal_choices_are_listed():
    assert field_docs(_Demo) == {"mode": "How to run.", "level": "Optional level.", "size": "Cells per side."}
    hints = typing.get_type_hints(_Demo)
    assert literal_choices(hints["mode"]) == ("fast", "exact")
    assert literal_choices(hints["level"]) == ("subpart", "part", "whole")
    assert literal_choices(hints["size"]) == ()
    desc = dict((n, d) for n, _, d in flat_parameters(_Demo()))
    assert desc["mode"] == "How to run. One of: fast | exact."


def test_literal_values_are_checked_when_loading():
    assert from_mapping(_Demo, {"mode": "exact", "level": "part"}).mode == "exact"
    with pytest.raises(ConfigError, match="mode"):
        from_mapping(_Demo, {"mode": "slow"})
    with pytest.raises(ConfigError, match="level"):
        from_mapping(_Demo, {"level": "object"})

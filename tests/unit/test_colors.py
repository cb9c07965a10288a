"""Version colours: expected first colours, stability across calls and sets, collisions."""

from __future__ import annotations

from mlshift._colors import PALETTE, version_color, version_colors


def test_numbered_versions_get_the_palette_in_order() -> None:
    assert version_color("v1") == PALETTE[0] == "#0072B2"  # Okabe-Ito blue
    assert version_color("v2") == PALETTE[1] == "#E69F00"  # orange
    assert version_color("v3") == PALETTE[2]
    assert version_color("rev-4") == PALETTE[3]
    assert version_color("v9") == PALETTE[0]  # wraps around


def test_colour_does_not_depend_on_the_other_versions_shown() -> None:
    assert version_color("v2", ["v1", "v2"]) == version_color("v2", ["v2", "v3"])
    assert version_color("v2", ["v2"]) == version_color("v2")
    # after promoting v2 and removing v1, v2 keeps its colour
    assert version_color("v2", ["v2", "v3"]) == "#E69F00"


def test_named_versions_use_a_salt_free_hash() -> None:
    # CRC-32 of the name, not hash(): these values are the same in every process and run
    assert version_color("baseline") == PALETTE[6]
    assert version_color("candidate") == PALETTE[4]
    assert version_color("shadow") == PALETTE[5]
    assert [version_color("candidate") for _ in range(3)] == [PALETTE[4]] * 3


def test_versions_shown_together_never_share_a_colour() -> None:
    versions = ["v1", "v9", "baseline", "candidate", "v17"]  # v1, v9 and v17 all prefer blue
    colors = version_colors(versions)
    assert len(set(colors.values())) == len(versions)
    assert colors["v1"] == PALETTE[0]  # the first in natural order keeps its slot
    assert colors["v9"] == PALETTE[1]
    assert all(version_color(v, versions) == colors[v] for v in versions)


def test_more_versions_than_colours_still_get_a_colour() -> None:
    versions = [f"v{i}" for i in range(1, 12)]
    colors = version_colors(versions)
    assert len(colors) == 11
    assert set(colors.values()) == set(PALETTE)


def test_natural_order_v2_before_v10() -> None:
    assert list(version_colors(["v10", "v2", "v1"])) == ["v1", "v2", "v10"]

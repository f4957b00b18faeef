"""Cheap-to-render stand-ins for round primitive geoms.

MuJoCo draws a cylinder with dozens of slices: in the software renderer one
costs about as much as ten boxes (~0.3 ms per 96x96 camera image).  At the
image sizes used here a regular prism built from a few boxes looks like a
cylinder, collides like one, and costs less than half as much.
"""

from __future__ import annotations

import math

# Sides of the prisms standing in for cylinders (an even number: each box
# makes two opposite sides); 8 costs four boxes, ~0.13 ms per image.
PRISM_SIDES = 8


def prism_xml(name: str, z: float, apothem: float, half_height: float, rgba: str, attributes: str = "") -> str:
    """MJCF for a vertical regular prism (a low-poly cylinder) centred at height `z` of its body.

    It is the union of PRISM_SIDES / 2 bars, boxes `name`_0, `name`_1, ...
    turned evenly about z, each as long as the prism is wide and as wide as
    one side; `apothem` is the distance from the axis to each side.
    `attributes` are added to every bar (so a `mass` there applies to each).
    """
    bars = PRISM_SIDES // 2
    side_half_width = apothem * math.tan(math.pi / PRISM_SIDES)
    geoms = []
    for index in range(bars):
        turn = math.pi * index / bars
        geoms.append(
            f"""
      <geom name="{name}_{index}" type="box" pos="0 0 {z}" size="{apothem} {side_half_width} {half_height}"
            quat="{math.cos(turn / 2):.9f} 0 0 {math.sin(turn / 2):.9f}" rgba="{rgba}" {attributes}/>"""
        )
    return "".join(geoms)

"""Acoustic scene simulator: renders synthetic RecordingBundles with ground truth.

See docs/simulator.md for what is modelled, with units and references.
"""

from .layout import (
    building,
    car_backfire,
    door_slam,
    event,
    firecracker,
    grid_nodes,
    gunshot,
    gunshot_string,
    hammer,
    hand_clap,
)
from .render import render_audio, render_scene
from .scene import (
    Blocked,
    Ground,
    Scene,
    SceneEnvironment,
    SceneEvent,
    SceneNode,
    Wall,
    Wgs84Position,
)
from .sources import CALIBRES

__all__ = [
    "CALIBRES",
    "Blocked",
    "Ground",
    "Scene",
    "SceneEnvironment",
    "SceneEvent",
    "SceneNode",
    "Wall",
    "Wgs84Position",
    "building",
    "car_backfire",
    "door_slam",
    "event",
    "firecracker",
    "grid_nodes",
    "gunshot",
    "gunshot_string",
    "hammer",
    "hand_clap",
    "render_audio",
    "render_scene",
]

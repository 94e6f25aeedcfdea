"""Node registry: where each node is, what it last said, when it was last heard.

Positions come from the nodes' retained status messages unless the hub's
config gives a surveyed position, which wins. All positions are also kept in
the hub's local ENU frame (metres), fixed at the first position known.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from shotline.core import messages as m

from .geometry import LocalFrame

log = logging.getLogger(__name__)


@dataclass
class NodeInfo:
    """What the hub knows about one node."""

    node_id: str
    position: m.Position | None = None
    enu_m: np.ndarray | None = None
    surveyed: bool = False
    state: str = "unknown"
    last_seen_ns: int = 0
    status: m.NodeStatus | None = None
    health: m.NodeHealth | None = None
    n_detections: int = 0


class NodeRegistry:
    """Nodes by id, with positions in WGS84 and in the local ENU frame."""

    def __init__(self, frame: LocalFrame | None = None, overrides: dict[str, m.Position] | None = None):
        self.frame = frame
        self.nodes: dict[str, NodeInfo] = {}
        for node_id, pos in (overrides or {}).items():
            self._set_position(self._get(node_id), pos, surveyed=True)

    def _get(self, node_id: str) -> NodeInfo:
        info = self.nodes.get(node_id)
        if info is None:
            info = self.nodes[node_id] = NodeInfo(node_id)
        return info

    def _set_position(self, info: NodeInfo, pos: m.Position, surveyed: bool) -> None:
        if self.frame is None:
            # Centre the frame on the first node; within a city the tangent
            # plane stays accurate to centimetres horizontally.
            self.frame = LocalFrame(pos.lat_deg, pos.lon_deg, pos.alt_m)
        e, n, u = self.frame.to_enu(pos.lat_deg, pos.lon_deg, pos.alt_m)
        info.position = pos
        info.enu_m = np.array([e, n, u], dtype=float)
        info.surveyed = surveyed

    def update_status(self, status: m.NodeStatus, received_ns: int) -> bool:
        """Record a status message; True if the node now has a position it did not have."""
        info = self._get(status.node_id)
        had = info.enu_m is not None
        info.status = status
        info.state = status.state
        info.last_seen_ns = max(info.last_seen_ns, received_ns)
        if status.position is not None and not info.surveyed:
            self._set_position(info, status.position, surveyed=False)
        return not had and info.enu_m is not None

    def update_health(self, health: m.NodeHealth, received_ns: int) -> None:
        """Record a health message."""
        info = self._get(health.node_id)
        info.health = health
        info.last_seen_ns = max(info.last_seen_ns, received_ns)

    def saw_detection(self, node_id: str, received_ns: int) -> None:
        info = self._get(node_id)
        info.n_detections += 1
        info.last_seen_ns = max(info.last_seen_ns, received_ns)

    def enu(self, node_id: str) -> np.ndarray | None:
        """ENU position of a node in metres, or None when unknown."""
        info = self.nodes.get(node_id)
        return None if info is None else info.enu_m

    def located_ids(self) -> list[str]:
        """Ids of the nodes whose position is known."""
        return [k for k, v in self.nodes.items() if v.enu_m is not None]

    def extent_m(self) -> float:
        """Largest distance between two located nodes, metres (0 with fewer than two)."""
        pts = [v.enu_m for v in self.nodes.values() if v.enu_m is not None]
        if len(pts) < 2:
            return 0.0
        p = np.array(pts)[:, :2]
        d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
        return float(d.max())

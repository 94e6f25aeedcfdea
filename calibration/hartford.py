"""The Hartford, CT demo scene: sensor patches over four neighbourhoods.

Coordinates are real (WGS84): 6-node patches on a 400 m grid centred on
Upper Albany, Clay Arsenal, Northeast and South Green. The scene mixes single
gunshots, a 3-round string, a firecracker and a door slam, with a brick
building beside the string (image-source echoes) and one node whose direct
path is blocked.
"""

from __future__ import annotations

from shotline.hub.geometry import LocalFrame

from .simulator import (
    Blocked,
    Scene,
    SceneEnvironment,
    Wgs84Position,
    building,
    door_slam,
    firecracker,
    grid_nodes,
    gunshot,
    gunshot_string,
)

#: ENU origin of the scene (downtown Hartford, north end), WGS84 degrees.
ORIGIN = (41.7700, -72.6800, 15.0)

#: Neighbourhood centres, WGS84 degrees.
NEIGHBOURHOODS: dict[str, tuple[float, float]] = {
    "upper-albany": (41.7835, -72.6990),
    "clay-arsenal": (41.7755, -72.6805),
    "northeast": (41.7900, -72.6700),
    "south-green": (41.7525, -72.6770),
}

SPACING_M = 400.0
SITE = "hartford"


def hartford_scene(start_time_ns: int, *, duration_s: float = 38.0, seed: int = 7) -> Scene:
    """The demo scene starting at true UTC ``start_time_ns`` (integer ns)."""
    frame = LocalFrame(*ORIGIN)
    centres = {k: frame.to_enu(lat, lon, ORIGIN[2])[:2] for k, (lat, lon) in NEIGHBOURHOODS.items()}
    nodes = []
    prefixes = {"upper-albany": "UA", "clay-arsenal": "CA", "northeast": "NE", "south-green": "SG"}
    for k, (e, n) in centres.items():
        nodes += grid_nodes(
            3, 2, SPACING_M, origin_en_m=(e, n), height_m=5.0, prefix=prefixes[k],
            jitter_m=40.0, clock_offset_std_ns=2_000, seed=seed + len(nodes),
        )

    def at(k: str, de: float, dn: float) -> tuple[float, float, float]:
        e, n = centres[k]
        return (e + de, n + dn, 1.5)

    def t(s: float) -> int:
        return start_time_ns + int(s * 1e9)

    events = [
        gunshot("G1", t(3.0), at("upper-albany", 120.0, 60.0), "9mm"),
        *gunshot_string("G2", t(9.0), at("clay-arsenal", -90.0, 40.0), n_rounds=3, interval_s=0.4,
                        calibre=".40sw", interval_jitter_s=0.05, seed=seed),
        firecracker("F1", t(16.0), at("northeast", 60.0, -80.0)),
        door_slam("D1", t(22.0), at("south-green", -50.0, 30.0)),
        gunshot("G3", t(27.0), at("south-green", 150.0, -90.0), ".45acp"),
        gunshot("G4", t(33.0), at("northeast", -140.0, 110.0), "7.62x39"),
    ]
    ca_e, ca_n = centres["clay-arsenal"]
    # A 60 m x 25 m brick block north of the string: its walls return echoes.
    x0, y0 = ca_e - 40.0, ca_n + 80.0
    walls = building("CA-brick", [(x0, y0), (x0 + 60.0, y0), (x0 + 60.0, y0 + 25.0), (x0, y0 + 25.0)],
                     height_m=12.0, reflection_coefficient=0.85)
    return Scene(
        nodes=nodes,
        events=events,
        start_time_ns=start_time_ns,
        duration_s=duration_s,
        origin=Wgs84Position(*ORIGIN),
        environment=SceneEnvironment(temperature_c=12.0, relative_humidity_pct=65.0),
        walls=walls,
        blocked=[Blocked(node_id="UA05", event_id="G1", extra_path_m=25.0)],
        background_noise_db=55.0,
    )

"""What the node reports about the machine it runs on: CPU, temperature, disk.

Each reading returns ``None`` when the machine does not offer it (no thermal
zone in a container, say), never a made-up number.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

THERMAL_ZONES = Path("/sys/class/thermal")


def cpu_load_pct() -> float | None:
    """One-minute load average as a percentage of all cores (100 = every core busy)."""
    try:
        load1 = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    return round(100.0 * load1 / (os.cpu_count() or 1), 1)


def temperature_c(zones: Path = THERMAL_ZONES) -> float | None:
    """SoC temperature, degrees C: the CPU thermal zone (Raspberry Pi: ``cpu-thermal``), else the hottest zone."""
    readings: list[tuple[str, float]] = []
    for zone in sorted(zones.glob("thermal_zone*")):
        try:
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip() if (zone / "type").exists() else ""
        except (OSError, ValueError):
            continue
        readings.append((kind, milli / 1000.0))
    if not readings:
        return None
    cpu = [t for k, t in readings if "cpu" in k.lower() or "soc" in k.lower()]
    return round(max(cpu or [t for _, t in readings]), 1)


def disk_free_mb(path: str | Path) -> float | None:
    """Free space on the file system holding ``path``, MB (10^6 bytes)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return round(shutil.disk_usage(p).free / 1e6, 1)
    except OSError:
        return None


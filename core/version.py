"""The installed package version, for provenance."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """Version of the installed ``shotline`` distribution (``"0+unknown"`` when not installed)."""
    try:
        return metadata.version("shotline")
    except metadata.PackageNotFoundError:
        return "0+unknown"

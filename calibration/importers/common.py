"""Helpers shared by the importers: exact ISO-8601 UTC parsing, audio copying, provenance."""

from __future__ import annotations

import hashlib
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import soundfile as sf

from shotline.core.version import package_version

from ..bundle import BundleError

__all__ = ["RecordingImportError", "copy_audio", "file_sha256", "import_provenance", "iso_to_ns"]

_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?"
)


class RecordingImportError(BundleError):
    """Recordings cannot be imported; the message names the file and the key."""


def iso_to_ns(text: str, where: str = "time") -> int:
    """ISO-8601 UTC text (``2018-12-19T00:49:26.000Z``) -> integer ns since the epoch, exactly.

    The fraction is read as digits (not through a float) so that a microsecond
    or nanosecond stamp survives unchanged. A missing zone means UTC.
    """
    mt = _ISO.fullmatch(text.strip()) if isinstance(text, str) else None
    if mt is None:
        raise RecordingImportError(f"{where}: {text!r} is not an ISO-8601 UTC time (e.g. 2018-12-19T00:49:26.000Z)")
    day, hh, mm, ss, frac, zone = mt.groups()
    base = datetime.fromisoformat(f"{day}T{hh}:{mm}:{ss}")
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        zh, zm = int(zone[1:3]), int(zone[-2:])
        offset_s = sign * (zh * 3600 + zm * 60)
    else:
        offset_s = 0
    secs = int(base.replace(tzinfo=UTC).timestamp()) - offset_s
    frac_ns = int((frac or "0").ljust(9, "0"))
    return secs * 1_000_000_000 + frac_ns


def copy_audio(src: Path, dst_dir: Path, name: str) -> tuple[str, int, int]:
    """Copy an audio file into a bundle folder; return (file name, sample rate Hz, channels)."""
    try:
        info = sf.info(str(src))
    except (RuntimeError, OSError) as exc:
        raise RecordingImportError(f"{src}: not a readable audio file: {exc}") from None
    dst = dst_dir / name
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return name, int(info.samplerate), int(info.channels)


def file_sha256(path: Path) -> str:
    """sha256 of a file (hex), recorded in the provenance of imported bundles."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_provenance(importer: str, source: Path, **extra) -> dict:
    """The ``provenance`` object of an imported bundle."""
    return {
        "generator": f"shotline.calibration.importers.{importer}",
        "version": package_version(),
        "source": str(source),
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **extra,
    }

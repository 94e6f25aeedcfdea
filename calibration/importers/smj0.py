"""WAV files carrying an ``smj0`` RIFF chunk (ShotSpotter sensor audio).

The chunk holds zlib-compressed JSON with, among other fields,
``serialNumber``, ``startTimeUTC`` (UTC of the first sample, ms resolution),
``geolocation`` {``latitude``, ``longitude``, ``elevation``}, ``weather``
{``temperature``} and ``transducers[].fullScale`` (dB SPL). A folder of such
files becomes one WGS84 bundle. ``elevation`` is taken as the altitude as
given (the files do not say whether it is above the geoid or the ellipsoid;
a common offset cancels in time differences).
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ..bundle import Bundle, Environment, Manifest, NodeEntry, Wgs84Position
from .common import RecordingImportError, copy_audio, import_provenance, iso_to_ns

log = logging.getLogger(__name__)

__all__ = ["SmjMetadata", "import_smj0_folder", "read_smj0", "write_smj0_wav"]

CHUNK_ID = b"smj0"


class _Geo(msgspec.Struct):
    latitude: float
    longitude: float
    elevation: float = 0.0


class _Weather(msgspec.Struct):
    temperature: float | None = None


class _Transducer(msgspec.Struct):
    channel: int = 0
    fullScale: float | None = None  # noqa: N815 - the file's key


class SmjMetadata(msgspec.Struct):
    """The fields of the ``smj0`` JSON the importer uses (others are ignored but kept in ``raw``)."""

    serialNumber: str  # noqa: N815
    startTimeUTC: str  # noqa: N815
    geolocation: _Geo
    weather: _Weather | None = None
    transducers: list[_Transducer] = []
    duration: float | None = None


def _chunks(data: bytes, path: Path):
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RecordingImportError(f"{path}: not a RIFF/WAVE file")
    i = 12
    while i + 8 <= len(data):
        cid = data[i:i + 4]
        (n,) = struct.unpack("<I", data[i + 4:i + 8])
        yield cid, data[i + 8:i + 8 + n]
        i += 8 + n + (n & 1)  # chunks are word aligned


def read_smj0(path: str | Path) -> tuple[SmjMetadata, dict[str, Any]]:
    """Decode the ``smj0`` chunk of a WAV file: (validated fields, the whole JSON object)."""
    path = Path(path)
    for cid, body in _chunks(path.read_bytes(), path):
        if cid == CHUNK_ID:
            try:
                raw = zlib.decompress(body)
            except zlib.error as exc:
                raise RecordingImportError(f"{path}: smj0 chunk is not zlib data: {exc}") from None
            try:
                meta = msgspec.json.decode(raw, type=SmjMetadata)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise RecordingImportError(f"{path}: smj0 JSON: {exc}") from None
            return meta, msgspec.json.decode(raw)
    raise RecordingImportError(f"{path}: no smj0 chunk")


def write_smj0_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int, meta: dict) -> None:
    """Write 16-bit mono WAV with an ``smj0`` chunk holding ``meta`` (for tests and tools)."""
    pcm = np.clip(np.round(np.asarray(samples, float) * 32768), -32768, 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate_hz, sample_rate_hz * 2, 2, 16)
    smj = zlib.compress(msgspec.json.encode(meta))
    body = b"WAVE"
    for cid, payload in ((b"fmt ", fmt), (b"data", pcm), (CHUNK_ID, smj)):
        body += cid + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def import_smj0_folder(src: str | Path, out_dir: str | Path) -> Bundle:
    """Import every ``*.wav`` with an ``smj0`` chunk in folder ``src`` into one bundle at ``out_dir``.

    Node ids are the sensors' serial numbers; the temperature is the median of
    the files' weather temperatures (15 °C with a warning when none is given).
    """
    src, out_dir = Path(src), Path(out_dir)
    wavs = sorted(p for p in src.iterdir() if p.suffix.lower() == ".wav") if src.is_dir() else [src]
    if not wavs:
        raise RecordingImportError(f"{src}: no .wav files")
    out_dir.mkdir(parents=True, exist_ok=True)
    nodes, temps, sources = [], [], {}
    for wav in wavs:
        meta, _ = read_smj0(wav)
        if meta.serialNumber in sources:
            raise RecordingImportError(
                f"{wav}: serial {meta.serialNumber} also in {sources[meta.serialNumber].name}")
        sources[meta.serialNumber] = wav
        fname, rate, _ = copy_audio(wav, out_dir, f"{meta.serialNumber}.wav")
        full_scale = next((t.fullScale for t in meta.transducers if t.channel == 0), None)
        g = meta.geolocation
        nodes.append(NodeEntry(
            node_id=meta.serialNumber, audio=fname, sample_rate_hz=rate,
            start_time_ns=iso_to_ns(meta.startTimeUTC, f"{wav}: smj0 startTimeUTC"),
            position=Wgs84Position(lat_deg=g.latitude, lon_deg=g.longitude, alt_m=g.elevation),
            full_scale_spl_db=full_scale,
        ))
        if meta.weather is not None and meta.weather.temperature is not None:
            temps.append(meta.weather.temperature)
    if not temps:
        log.warning("%s: no temperature in the smj0 metadata; assuming 15 °C", src)
    manifest = Manifest(
        nodes=nodes,
        environment=Environment(temperature_c=float(np.median(temps)) if temps else 15.0),
        provenance=import_provenance("smj0", src, files={k: v.name for k, v in sources.items()}),
    )
    return Bundle(manifest, root=out_dir).write(out_dir)

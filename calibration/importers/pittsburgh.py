"""Importer for the Pittsburgh live-fire layout (ShotSpotter Tech Note 098 supplement).

One test folder ``FPn/test_XXX/`` becomes one purely local bundle (no WGS84:
the data set gives x east / y north / z up metres in an arbitrary frame per
firing position, kept unchanged in ``enu_m``):

* ``test_XXX.audio.<serial>.wav`` + ``.json`` -> one node per sensor; the
  sidecar's ``timestamp`` (GPS-disciplined UTC of the first sample) is
  ``start_time_ns``. The node's ``enu_m`` is the sensor position the deployed
  system itself used, from ``allpulses.json`` (``location_error`` ~3 cm,
  the same for a serial in every test): the sidecars' ``location`` is a
  different, noisy fix per recording (measured against the pulse-list
  positions: median 3.65 m (FP1) and 3.53 m (FP2), up to 19 m horizontally and 26 m vertically, and
  the same sensor moves by up to 27 m horizontally, 44 m in 3-D, between tests), and with 4-6 nodes
  each such metre lands in the located shot. Order: the median over this
  test's pulses of that serial, else over the firing position's other tests
  (sibling folders), else the sidecar (logged);
* ``test_XXX.survey.json`` -> one ``gunshot`` event per round at the surveyed
  firing position (about 2.5 m accuracy);
* ``test_XXX.weather.json`` -> ``environment.temperature_c`` (and wind);
* ``test_XXX.nlos-tuples.json`` + ``allpulses.json`` -> each round's emission
  time. The survey's ``approximate_time_utc`` is not a discharge time, so the
  time is derived: for the pulses the commercial system used for that round,
  ``arrival - |sensor - survey| / c``, and the median over them. Its spread
  (recorded in the event's properties) is a few ms, from the survey error and
  ms-precision pulse times — ample to match located shots to rounds.

Sensors: full scale about 93 dB SPL (README), recorded as ``full_scale_spl_db``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import msgspec
import numpy as np

from shotline.hub.config import speed_of_sound_mps

from ..bundle import Bundle, Environment, EventEntry, Manifest, NodeEntry
from .common import RecordingImportError, copy_audio, import_provenance, iso_to_ns

log = logging.getLogger(__name__)

__all__ = ["FULL_SCALE_SPL_DB", "import_pittsburgh", "import_pittsburgh_test", "pittsburgh_tests"]

FULL_SCALE_SPL_DB = 93.0
"""Sensor full scale, dB SPL, as the data set's README gives it (gunshots clip)."""

LICENCE = (
    "CC BY 4.0, ShotSpotter, Inc.: Pittsburgh live-fire test (Tech Note 098 supplement, "
    "Calhoun et al. 2020), ShotSpotter/research.accuracy-of-gunshot-location b0dc2840"
)


class _Xyz(msgspec.Struct):
    x: float
    y: float
    z: float

    def enu(self) -> list[float]:
        return [self.x, self.y, self.z]


class _AudioMeta(msgspec.Struct):
    serial_number: str
    timestamp: str
    location: _Xyz


class _Survey(msgspec.Struct):
    test_id: int
    firing_position: str
    num_rounds: int
    firearm: str
    survey_location: _Xyz
    approximate_time_utc: str | None = None


class _Weather(msgspec.Struct):
    temperature: float
    speed: float = 0.0
    direction: float = 0.0


class _Pulse(msgspec.Struct):
    pulse_uuid: str
    serial_number: str
    arrival_time_utc: str
    location: _Xyz


class _Tuple(msgspec.Struct):
    shot_index: int
    pulse_uuids: list[str]


def _load(path: Path, kind):
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise RecordingImportError(f"{path}: {exc}") from None
    except OSError as exc:
        raise RecordingImportError(f"{path}: {exc}") from None


def pittsburgh_tests(root: str | Path) -> list[Path]:
    """Test folders (those holding a ``*.survey.json``) under ``root``, sorted by name."""
    root = Path(root)
    if list(root.glob("*.survey.json")):
        return [root]
    return sorted({p.parent for p in root.rglob("*.survey.json")}, key=lambda p: (p.parent.name, p.name))


def _wind_enu(speed_mps: float, from_deg: float) -> list[float] | None:
    if speed_mps <= 0:
        return None
    # Meteorological direction is where the wind blows FROM, clockwise from north.
    to = math.radians(from_deg + 180.0)
    return [speed_mps * math.sin(to), speed_mps * math.cos(to)]


def _pulse_positions(test_dir: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Sensor positions (local metres) from the pulse lists: (this test's, the firing position's).

    Each is the per-axis median over the pulses of a serial; the second pools
    every ``test_*/*.allpulses.json`` beside this test (same firing position,
    same frame). Missing or unreadable sibling files are skipped.
    """
    def medians(files: list[Path]) -> dict[str, list[float]]:
        got: dict[str, list[list[float]]] = {}
        for f in files:
            for p in _load(f, list[_Pulse]):
                got.setdefault(p.serial_number, []).append(p.location.enu())
        return {k: np.median(np.array(v), axis=0).tolist() for k, v in got.items()}

    own = sorted(test_dir.glob("*.allpulses.json"))
    siblings = sorted(test_dir.parent.glob("test_*/*.allpulses.json"))
    return medians(own), medians(siblings)


def _round_times(test_dir: Path, name: str, survey: _Survey, c_mps: float) -> list[tuple[int, dict]]:
    """Per round: (emission time ns, properties) from the published pulses and the survey."""
    pulses_p, tuples_p = test_dir / f"{name}.allpulses.json", test_dir / f"{name}.nlos-tuples.json"
    if not pulses_p.exists() or not tuples_p.exists():
        raise RecordingImportError(
            f"{test_dir}: needs {pulses_p.name} and {tuples_p.name} to time the rounds "
            "(the survey's approximate_time_utc is not a discharge time)"
        )
    pulses = {p.pulse_uuid: p for p in _load(pulses_p, list[_Pulse])}
    src = np.array(survey.survey_location.enu())
    out = []
    for tup in sorted(_load(tuples_p, list[_Tuple]), key=lambda t: t.shot_index):
        used = [pulses[u] for u in tup.pulse_uuids if u in pulses]
        if not used:
            raise RecordingImportError(f"{tuples_p}: shot_index {tup.shot_index} has no known pulse")
        ref = iso_to_ns(used[0].arrival_time_utc)
        em = np.array([
            (iso_to_ns(p.arrival_time_utc, f"{pulses_p}:{p.pulse_uuid}") - ref) / 1e9
            - np.linalg.norm(np.array(p.location.enu()) - src) / c_mps
            for p in used
        ])
        t0 = float(np.median(em))
        mad = float(np.median(np.abs(em - t0)))
        out.append((ref + int(round(t0 * 1e9)), {
            "shot_index": tup.shot_index,
            "time_source": "median(pulse arrival - survey distance / c) over the nlos tuple",
            "time_mad_ms": round(mad * 1e3, 2),
            "n_pulses": len(used),
        }))
    return out


def import_pittsburgh_test(test_dir: str | Path, out_dir: str | Path) -> Bundle:
    """Import one ``FPn/test_XXX`` folder into a bundle at ``out_dir`` (WAV audio copied)."""
    test_dir, out_dir = Path(test_dir), Path(out_dir)
    surveys = sorted(test_dir.glob("*.survey.json"))
    if len(surveys) != 1:
        raise RecordingImportError(f"{test_dir}: expected one *.survey.json, found {len(surveys)}")
    name = surveys[0].name[: -len(".survey.json")]
    survey = _load(surveys[0], _Survey)
    weather_p = test_dir / f"{name}.weather.json"
    weather = _load(weather_p, _Weather) if weather_p.exists() else None
    if weather is None:
        log.warning("%s: no weather file; assuming 15 °C", test_dir)
    temp_c = weather.temperature if weather is not None else 15.0
    env = Environment(
        temperature_c=temp_c,
        wind_enu_mps=_wind_enu(weather.speed, weather.direction) if weather else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    own_pos, fp_pos = _pulse_positions(test_dir)
    nodes = []
    for meta_p in sorted(test_dir.glob(f"{name}.audio.*.json")):
        meta = _load(meta_p, _AudioMeta)
        enu = own_pos.get(meta.serial_number) or fp_pos.get(meta.serial_number)
        if enu is None:
            log.warning("%s: %s not in any pulse list; using the sidecar's position", test_dir, meta.serial_number)
            enu = meta.location.enu()
        wav = meta_p.with_suffix(".wav")
        if not wav.exists():
            raise RecordingImportError(f"{meta_p}: audio file {wav.name} is missing")
        fname, rate, _ = copy_audio(wav, out_dir, f"{meta.serial_number}.wav")
        nodes.append(NodeEntry(
            node_id=meta.serial_number, audio=fname, sample_rate_hz=rate,
            start_time_ns=iso_to_ns(meta.timestamp, f"{meta_p}: timestamp"),
            enu_m=enu, full_scale_spl_db=FULL_SCALE_SPL_DB,
        ))
    if not nodes:
        raise RecordingImportError(f"{test_dir}: no {name}.audio.<serial>.json sidecars")
    c = speed_of_sound_mps(temp_c)
    rounds = _round_times(test_dir, name, survey, c)
    if len(rounds) != survey.num_rounds:
        log.warning("%s: survey says %d rounds, nlos tuples give %d", test_dir, survey.num_rounds, len(rounds))
    events = [
        EventEntry(
            event_id=f"{name}-r{i + 1}", kind="gunshot", time_ns=t_ns,
            enu_m=survey.survey_location.enu(),
            properties={"firearm": survey.firearm, "firing_position": survey.firing_position,
                        "test_id": survey.test_id, "round": i + 1, "position_sigma_m": 2.5, **props},
        )
        for i, (t_ns, props) in enumerate(rounds)
    ]
    manifest = Manifest(
        nodes=nodes, events=events, environment=env,
        provenance=import_provenance("pittsburgh", test_dir, licence=LICENCE, test=name,
                                     firing_position=survey.firing_position),
    )
    # The audio is already in place; write() validates it and adds manifest.json.
    return Bundle(manifest, root=out_dir).write(out_dir)


def import_pittsburgh(root: str | Path, out_root: str | Path) -> list[Bundle]:
    """Import every test folder under ``root`` into ``out_root/<FP>/<test>``."""
    tests = pittsburgh_tests(root)
    if not tests:
        raise RecordingImportError(f"{root}: no Pittsburgh test folders (*.survey.json) found")
    out = []
    for t in tests:
        out.append(import_pittsburgh_test(t, Path(out_root) / t.parent.name / t.name))
    return out


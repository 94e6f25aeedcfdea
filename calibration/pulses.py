"""Published pulse lists (Pittsburgh live-fire 2018, ShotSpotter Tech Note 098) through the hub.

The data set (``../shared/data/pittsburgh-live-fire-2018``, CC BY 4.0,
ShotSpotter, Inc., README there) gives for each test every impulse the
deployed sensors reported (``test_XXX.allpulses.json``: sensor serial,
arrival time UTC with millisecond precision, sensor x/y/z in a local
Cartesian frame in metres), the surveyed firing position and the weather.
``nlos-tuples.json`` (the commercial system's own association) is never read
here: the hub's associator has to find the shots itself.

:func:`load_test` reads one test; :func:`locate_test` feeds its pulses as
ordinary Detection messages (time quality ``pps``: the sensors are
GPS-disciplined) through a :class:`~shotline.hub.pipeline.HubPipeline`
whose local ENU frame sits on a synthetic WGS84 origin, with the sensor
positions given in the data's local metres (:meth:`HubPipeline.set_node_enu`)
and the test's weather as the hub's weather input. :func:`evaluate` does
every test of one or more firing positions and summarises the 2-D errors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np

from shotline.core import messages as m
from shotline.core import topics
from shotline.hub.config import AssociationSettings, HubConfig, IncidentSettings, LocationSettings
from shotline.hub.geometry import LocalFrame
from shotline.hub.pipeline import HubPipeline

log = logging.getLogger(__name__)

#: Synthetic WGS84 origin of the hub's frame (Pittsburgh); the data's own frame has no lat/lon.
SYNTHETIC_ORIGIN = (40.4406, -79.9959, 0.0)
SITE = "pittsburgh"


# -- file formats (validated with msgspec: a wrong file says which key is wrong) ------------
class _Xyz(msgspec.Struct):
    x: float
    y: float
    z: float


class _Pulse(msgspec.Struct):
    pulse_uuid: str
    serial_number: str
    arrival_time_utc: str
    location: _Xyz
    location_error: float | None = None
    signal_to_noise_dB: float | None = None  # noqa: N815 (the file's key)
    power_dB_SPL: float | None = None  # noqa: N815


class _Survey(msgspec.Struct):
    test_id: int
    firing_position: str
    num_rounds: int
    survey_location: _Xyz
    firearm: str = ""


class _Weather(msgspec.Struct):
    temperature: float
    speed: float = 0.0
    direction: float = 0.0


@dataclass(frozen=True)
class Pulse:
    """One reported impulse: sensor, arrival time (UTC ns), sensor position (local metres)."""

    pulse_id: str
    sensor: str
    time_ns: int
    xyz_m: tuple[float, float, float]
    snr_db: float | None
    spl_db: float | None


@dataclass
class PulseTest:
    """One test (a string of 1 or 3 rounds from one firing position)."""

    name: str
    firing_position: str
    num_rounds: int
    survey_xyz_m: np.ndarray
    temperature_c: float
    wind_enu_mps: np.ndarray
    """Wind vector (east, north) m/s, the direction the air moves to."""
    pulses: list[Pulse] = field(default_factory=list)

    def sensors(self) -> dict[str, np.ndarray]:
        """Sensor positions (local metres) by serial number."""
        return {p.sensor: np.array(p.xyz_m) for p in self.pulses}


def parse_utc_ns(text: str) -> int:
    """ISO 8601 UTC ('...Z') -> integer ns since the epoch, exact to the digits given."""
    if not text.endswith("Z"):
        raise ValueError(f"expected a UTC time ending in 'Z', got {text!r}")
    head, _, frac = text[:-1].partition(".")
    whole = datetime.fromisoformat(head + "+00:00")
    digits = (frac or "0")[:9].ljust(9, "0")
    if not digits.isdigit():
        raise ValueError(f"bad fractional seconds in {text!r}")
    return int(whole.timestamp()) * 1_000_000_000 + int(digits)


def wind_vector_enu(speed_mps: float, direction_deg: float) -> np.ndarray:
    """Meteorological wind (speed, direction it blows FROM, degrees clockwise from north) -> (east, north) m/s."""
    a = math.radians(direction_deg)
    return np.array([-speed_mps * math.sin(a), -speed_mps * math.cos(a)])


def _read(path: Path, kind):
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_test(folder: str | Path) -> PulseTest:
    """Read ``test_XXX.allpulses.json``, ``.survey.json`` and ``.weather.json`` of one test folder."""
    folder = Path(folder)
    name = folder.name
    pulses = _read(folder / f"{name}.allpulses.json", list[_Pulse])
    survey = _read(folder / f"{name}.survey.json", _Survey)
    weather = _read(folder / f"{name}.weather.json", _Weather)
    sv = survey.survey_location
    test = PulseTest(
        name=name,
        firing_position=survey.firing_position,
        num_rounds=survey.num_rounds,
        survey_xyz_m=np.array([sv.x, sv.y, sv.z]),
        temperature_c=weather.temperature,
        wind_enu_mps=wind_vector_enu(weather.speed, weather.direction),
    )
    for p in pulses:
        loc = p.location
        test.pulses.append(Pulse(p.pulse_uuid, p.serial_number, parse_utc_ns(p.arrival_time_utc),
                                 (loc.x, loc.y, loc.z), p.signal_to_noise_dB, p.power_dB_SPL))
    test.pulses.sort(key=lambda p: p.time_ns)
    return test


def hub_config(timing_sigma_s: float = 2e-3, mode: str = "2.5d", source_height_m: float = 0.0) -> HubConfig:
    """Hub settings for millisecond-precision pulse times over a ~2 km network."""
    return HubConfig(
        site=SITE,
        location=LocationSettings(timing_sigma_s=timing_sigma_s, source_height_m=source_height_m,
                                  mode=mode),  # type: ignore[arg-type]
        association=AssociationSettings(max_range_m=2000.0, grid_step_m=40.0, match_tolerance_s=0.008,
                                        max_rms_residual_s=0.008, max_silent_fraction=0.5),
        incidents=IncidentSettings(gap_s=30.0, radius_m=100.0),
    )


def locate_test(test: PulseTest, cfg: HubConfig | None = None, ground_height_m: float | None = None,
                mode: str = "2.5d") -> list[m.Shot]:
    """Associate and locate one test's pulses with the hub code; returns the final shots.

    ``ground_height_m`` (local z of the ground at the shooter, a terrain
    model's job in a deployment; default the median sensor height) sets the
    2.5-D constraint: the source is 1.5 m above it.
    """
    if cfg is None:
        sensors = np.array(list(test.sensors().values()))
        ground = float(np.median(sensors[:, 2])) if ground_height_m is None else ground_height_m
        cfg = hub_config(mode=mode, source_height_m=float(ground) + 1.5)
    pipe = HubPipeline(cfg, frame=LocalFrame(*SYNTHETIC_ORIGIN))
    for serial, xyz in test.sensors().items():
        pipe.set_node_enu(_node_id(serial), xyz)
    pipe.set_weather(temperature_c=test.temperature_c, wind_enu_mps=test.wind_enu_mps)
    shots: dict[str, m.Shot] = {}

    def take(outs):
        for o in outs:
            for s in o.incident.shots:
                shots[s.shot_id] = s

    for p in test.pulses:
        nid = _node_id(p.sensor)
        det = m.Detection(
            detection_id=f"{test.name}-{p.pulse_id}", site=SITE, node_id=nid, onset_time_ns=p.time_ns,
            onset_sigma_s=cfg.location.timing_sigma_s, time_quality="pps", peak_dbfs=0.0,
            snr_db=float(p.snr_db or 0.0), noise_floor_dbfs=0.0, peak_db_spl=p.spl_db,
        )
        take(pipe.handle(topics.node_topic(SITE, nid, "detection"), m.encode(det), p.time_ns))
        take(pipe.tick(p.time_ns - int(2e9)))  # conservative watermark: any pulse can still arrive 2 s late
    take(pipe.finish())
    frame = pipe.registry.frame
    assert frame is not None
    return sorted(shots.values(), key=lambda s: s.time_ns)


def shot_xy(shot: m.Shot) -> np.ndarray:
    """A shot's position back in the data's local metres (east, north)."""
    frame = LocalFrame(*SYNTHETIC_ORIGIN)
    e, n, _ = frame.to_enu(shot.position.lat_deg, shot.position.lon_deg, shot.position.alt_m)
    return np.array([e, n])


def _node_id(serial: str) -> str:
    return topics.check_id(serial.replace(".", "-"), "sensor serial")


@dataclass
class FpResult:
    """Per firing position: the 2-D error of the mean location and per-shot error percentiles (m)."""

    firing_position: str
    n_tests: int
    n_rounds: int
    n_located: int
    mean_error_m: float
    shot_p50_m: float
    shot_p90_m: float
    shot_max_m: float
    mean_nodes: float


def evaluate(root: str | Path, firing_positions=("FP1", "FP2"), gate_m: float = 50.0, mode: str = "2.5d",
             use_survey_ground: bool = True, progress: bool = False) -> list[FpResult]:
    """Locate every test of the firing positions; per FP, errors of the shots within ``gate_m`` of the survey.

    A test contributes at most ``num_rounds`` shots (the closest in time
    order of location quality are the ones within the gate); extra shots
    (echoes located elsewhere) are not counted as located rounds.
    """
    root = Path(root)
    out = []
    for fp in firing_positions:
        folders = sorted((root / fp).glob("test_*"))
        if progress:
            from tqdm import tqdm

            folders = tqdm(folders, desc=fp)
        errs, xys, nodes, n_rounds, survey = [], [], [], 0, []
        for folder in folders:
            test = load_test(folder)
            n_rounds += test.num_rounds
            survey.append(test.survey_xyz_m)
            ground = float(test.survey_xyz_m[2]) if use_survey_ground else None
            shots = locate_test(test, ground_height_m=ground, mode=mode)
            near = []
            for s in shots:
                xy = shot_xy(s)
                d = float(np.hypot(*(xy - test.survey_xyz_m[:2])))
                if d <= gate_m:
                    near.append((d, xy, s.n_nodes))
            for d, xy, n in near[: test.num_rounds]:
                errs.append(d)
                xys.append(xy)
                nodes.append(n)
        sv = np.mean(survey, axis=0)
        mean_err = float(np.hypot(*(np.mean(xys, axis=0) - sv[:2]))) if xys else math.nan
        out.append(FpResult(
            fp, len(folders), n_rounds, len(errs), mean_err,
            float(np.percentile(errs, 50)) if errs else math.nan,
            float(np.percentile(errs, 90)) if errs else math.nan,
            float(np.max(errs)) if errs else math.nan,
            float(np.mean(nodes)) if nodes else math.nan,
        ))
    return out

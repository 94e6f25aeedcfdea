"""Calibration solvers; each returns a :class:`SolverResult` with a config patch and a short report."""

from .clock import self_calibrate_clocks, solve_clock_offsets
from .common import Observation, SolverResult, arrivals_at_known_events, to_toml
from .geometry import refine_positions, solve_speed_of_sound
from .levels import solve_classifier_operating_point, solve_mic_level, solve_trigger_thresholds

__all__ = [
    "Observation",
    "SolverResult",
    "arrivals_at_known_events",
    "refine_positions",
    "self_calibrate_clocks",
    "solve_classifier_operating_point",
    "solve_clock_offsets",
    "solve_mic_level",
    "solve_speed_of_sound",
    "solve_trigger_thresholds",
    "to_toml",
]

"""Level meter and the sensor CLI verbs that need no hardware."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from shotline.sensor import cli
from shotline.sensor.level import format_level, measure, run_meter

FS = 48000


def test_sine_levels_and_spl():
    x = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(FS) / FS)
    lv = measure(x, full_scale_spl_db=120.0)
    assert lv.peak_dbfs == pytest.approx(20 * math.log10(0.5), abs=0.01)
    assert lv.rms_dbfs == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert lv.rms_db_spl == pytest.approx(lv.rms_dbfs + 120.0)
    assert not lv.clipped and measure(np.ones(10)).clipped
    assert measure(np.zeros(10)).rms_dbfs == -math.inf


def test_meter_prints_one_line_per_interval_with_a_bar():
    blocks = ((i, np.full(4800, 0.1, np.float32)) for i in range(0, 10 * 4800, 4800))
    out = io.StringIO()
    assert run_meter(blocks, FS, interval_s=0.2, full_scale_spl_db=100.0, out=out, tty=False) == 5
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and "-20.0 dBFS" in lines[0] and "80.0 dB SPL" in lines[0] and "#" in lines[0]
    assert "CLIP" in format_level(measure(np.ones(4)))


LIVE = """
[node]
site = "hartford"
node_id = "UA03"

[audio]
source = "live"
device = "i2s"
dtype = "int32"
channel = 1
channels = 2

[storage]
data_dir = "/var/lib/shotline"

[classifier]
min_gunshot_score = 0.7
"""


def test_check_config_accepts_a_live_node_and_names_bad_keys(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text(LIVE)
    assert cli.main(["check-config", str(p)]) == 0
    assert "OK (node hartford/UA03)" in capsys.readouterr().out
    p.write_text(LIVE.replace('dtype = "int32"', 'dtype = "s32_le"'))
    assert cli.main(["check-config", str(p)]) == 2
    assert "$.audio.dtype" in capsys.readouterr().err
    p.write_text(LIVE.replace("channels = 2", "channels = 1"))
    assert cli.main(["check-config", str(p)]) == 2
    assert "channels (1) must be more than channel (1)" in capsys.readouterr().err
    p.write_text(LIVE.replace("min_gunshot_score = 0.7", "min_gunshot_score = 7"))
    assert cli.main(["check-config", str(p)]) == 2
    assert "$.classifier" in capsys.readouterr().err


def test_list_devices_runs_without_hardware(capsys):
    rc = cli.main(["list-devices", "--json"])
    out = capsys.readouterr()
    assert rc in (0, 1)
    if rc == 1:
        assert "PortAudio" in out.err
    else:
        import json

        assert isinstance(json.loads(out.out), list)

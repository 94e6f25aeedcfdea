"""Live capture through the real PortAudio/ALSA path, fed from a WAV by an ALSA ``file`` PCM.

The test writes an ALSA configuration in its tmp dir that defines a capture PCM
``shotline_wav`` reading raw S32_LE stereo from a file (converted from a WAV),
and runs the sensor in a subprocess with ``ALSA_CONFIG_PATH`` pointing at the
system configuration plus that file (PortAudio reads ALSA's configuration when
it initialises, at import of sounddevice, hence the subprocess). The ALSA null
slave is not paced by a clock, so only the samples, the device selection and
the detections are checked here, not the time stamps (those are covered with a
fake stream in tests/sensor/test_capture.py).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shotline.sensor.impulse_synth import add_friedlander, white_noise

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FS = 48000
ALSA_CONF = Path("/usr/share/alsa/alsa.conf")


def _need_portaudio():
    reason = None
    if ctypes.util.find_library("portaudio") is None:
        reason = "PortAudio is not installed (Debian: apt install libportaudio2)"
    elif not ALSA_CONF.exists():
        reason = "ALSA configuration missing (Debian: apt install libasound2)"
    if reason:
        if IN_CI:
            pytest.fail(reason + "; CI=true requires it")
        pytest.skip(reason)


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from shotline.sensor.capture import LiveSource, list_input_devices
    from shotline.sensor.config import AudioSettings, NodeSettings, SensorConfig
    from shotline.sensor.node import SensorNode

    names = [d["name"] for d in list_input_devices()]
    cfg = SensorConfig(node=NodeSettings(site="t", node_id="n1"),
                       audio=AudioSettings(source="live", block_s=0.01))
    n = int(sys.argv[1])
    src = LiveSource("shotline_wav", sample_rate_hz=48000, dtype="int32", channel=1, channels=2,
                     block_s=0.01, dc_cutoff_hz=0.0, queue_s=60.0, max_samples=n)
    got = []
    node = SensorNode(cfg, src, None, classifier=None)
    blocks = src.blocks
    def tap():
        for i0, x in blocks():
            got.append(x.copy())
            yield i0, x
    src.blocks = tap
    node.run()
    np.save(sys.argv[2], np.concatenate(got))
    print(json.dumps({"devices": names, "device_index": src.device_index,
                      "onsets": [src.timebase.to_index(d.onset_time_ns) for d in node.stats.detections],
                      "gaps": src.stats.n_gaps}))
    """
)


@pytest.mark.slow
def test_capture_through_portaudio_from_a_wav(tmp_path):
    _need_portaudio()
    n = int(1.5 * FS)
    rng = np.random.default_rng(5)
    left = white_noise(n, rng, rms=0.01)
    right = white_noise(n, rng, rms=0.003)
    add_friedlander(right, FS, 0.7, amplitude=0.4)
    wav = tmp_path / "mic.wav"
    sf.write(wav, np.stack([left, right], axis=1), FS, subtype="PCM_32")
    # The file PCM reads raw frames in the format the application asks for.
    pcm, _ = sf.read(wav, dtype="int32")
    raw = tmp_path / "mic.raw"
    pcm.astype("<i4").tofile(raw)
    asoundrc = tmp_path / "asoundrc"
    asoundrc.write_text(
        "pcm.shotline_wav {\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n"
        f"  infile \"{raw}\"\n  format \"raw\"\n}}\n"
    )
    env = dict(os.environ, ALSA_CONFIG_PATH=f"{ALSA_CONF}:{asoundrc}")
    out = tmp_path / "got.npy"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(n), str(out)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "shotline_wav" in res["devices"]
    got = np.load(out)
    # Every sample of channel 1, scaled from S32_LE to full scale, in order.
    np.testing.assert_allclose(got[:n], pcm[:, 1] / 2**31, atol=1e-9)
    assert res["gaps"] == 0
    assert len(res["onsets"]) == 1 and res["onsets"][0] == pytest.approx(0.7 * FS, abs=2)

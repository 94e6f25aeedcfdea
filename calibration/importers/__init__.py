"""Importers: real recordings -> RecordingBundle (see docs/recording-bundle.md, docs/calibration.md).

* :func:`import_pittsburgh` / :func:`import_pittsburgh_test`: the Pittsburgh live-fire layout;
* :func:`import_smj0_folder`: WAV files with an embedded ``smj0`` chunk (ShotSpotter sensors);
* :func:`import_csv`: plain per-node audio files plus a CSV of positions and start times.
"""

from .common import RecordingImportError, iso_to_ns
from .csv_nodes import import_csv
from .pittsburgh import import_pittsburgh, import_pittsburgh_test, pittsburgh_tests
from .smj0 import import_smj0_folder, read_smj0, write_smj0_wav

__all__ = [
    "RecordingImportError",
    "import_csv",
    "import_pittsburgh",
    "import_pittsburgh_test",
    "import_smj0_folder",
    "iso_to_ns",
    "pittsburgh_tests",
    "read_smj0",
    "write_smj0_wav",
]

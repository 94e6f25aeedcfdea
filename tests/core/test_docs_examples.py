"""Every JSON example in docs/mqtt.md is a valid message of the schema it names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shotline.core import messages as m

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"
KINDS = {k.__struct_config__.tag: k for k in (m.Detection, m.NodeStatus, m.NodeHealth, m.Incident, m.HubStatus, m.HubHealth)}


def _examples():
    for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S):
        obj = json.loads(block)
        if isinstance(obj, dict) and obj.get("schema") in KINDS:
            yield obj


@pytest.mark.parametrize("example", list(_examples()), ids=lambda o: o["schema"])
def test_doc_example_decodes(example):
    msg = m.decode(json.dumps(example).encode(), KINDS[example["schema"]])
    assert m.decode(m.encode(msg), type(msg)) == msg


def test_every_message_kind_has_an_example():
    assert {o["schema"] for o in _examples()} == set(KINDS)

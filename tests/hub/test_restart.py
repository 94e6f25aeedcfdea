"""A hub killed mid-stream restarts from its journal, its store and its persistent session without losing or
duplicating an incident (hub/journal.py, hub/recovery.py, HubService.recover)."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from test_health import _Loopback
from test_pipeline import SITE, T0_NS, arrivals, detection, grid, status

from shotline.core import messages as m
from shotline.hub.config import HubConfig, LocationSettings, StoreSettings
from shotline.hub.journal import MessageJournal
from shotline.hub.service import HubService
from shotline.hub.store import IncidentStore

S = 10**9


# -- the journal ---------------------------------------------------------------------------------
def test_the_journal_gives_back_what_was_written_since_a_time_and_skips_a_record_cut_short(tmp_path):
    j = MessageJournal(tmp_path / "j", keep_s=100.0, segment_s=10.0)
    written = [(f"t/{k}", bytes([k % 256]) * (k % 7), k * S) for k in range(40)]  # 40 s: four segments
    for topic, payload, rec in written:
        j.append(topic, payload, rec)
    j.close()
    assert len(list((tmp_path / "j").glob("*.seg"))) == 4
    assert list(MessageJournal(tmp_path / "j", 100.0).read_since(0)) == written
    assert list(MessageJournal(tmp_path / "j", 100.0).read_since(25 * S)) == written[25:]
    last = max((tmp_path / "j").glob("*.seg"), key=lambda p: int(p.stem))
    with open(last, "ab") as f:  # killed while writing: a header, its topic and 2 of its 100 payload bytes
        f.write(struct.pack("<qHI", 41 * S, 1, 100) + b"t" + b"xy")
    assert list(MessageJournal(tmp_path / "j", 100.0).read_since(0)) == written


def test_the_journal_keeps_the_segments_that_hold_its_last_keep_s(tmp_path):
    j = MessageJournal(tmp_path / "j", keep_s=25.0, segment_s=10.0)
    for k in range(60):
        j.append("t", b"x", k * S)
    j.close()
    got = list(MessageJournal(tmp_path / "j", 25.0).read_since(0))
    # Pruned as each segment starts: at 50 s, the last 25 s (from 25 s) are in the segments from 20 s on, and
    # the older ones went. (So a journal holds at most keep_s + segment_s.)
    assert got[0][2] == 20 * S and got[-1][2] == 59 * S and len(got) == 40
    with pytest.raises(ValueError):
        MessageJournal(tmp_path / "k", keep_s=0.0)


def test_a_nodes_status_older_than_the_journal_keeps_is_replayed_first(tmp_path):
    """A node's status (its position) may be days old: every segment starts with the latest of each sticky
    topic, and a read from any time gives those first; a journal opened again (a restarted hub) goes on
    writing them."""
    def sticky(topic):
        return topic.endswith("/status")

    j = MessageJournal(tmp_path / "j", keep_s=120.0, segment_s=60.0, sticky=sticky)
    j.append("n/A/status", b"A1", 0)
    j.append("n/B/status", b"B1", 1 * S)
    j.append("n/A/status", b"A2", 2 * S)
    for k in range(3, 300):
        j.append("n/A/detection", b"d", k * S)
    j.close()
    got = list(MessageJournal(tmp_path / "j", 120.0, 60.0, sticky).read_since(250 * S))
    assert [(t, p) for t, p, _ in got[:2]] == [("n/A/status", b"A2"), ("n/B/status", b"B1")]
    assert got[2] == ("n/A/detection", b"d", 250 * S) and len(got) == 2 + 50
    again = MessageJournal(tmp_path / "j", 120.0, 60.0, sticky)
    for k in range(600, 700):
        again.append("n/A/detection", b"d", k * S)
    again.close()
    got = list(MessageJournal(tmp_path / "j", 120.0, 60.0, sticky).read_since(690 * S))
    assert {p for t, p, _ in got if t.endswith("/status")} == {b"A2", b"B1"}


# -- the hub ------------------------------------------------------------------------------------
SOURCE = (40.0, 10.0, 1.5)


class _Clock:
    def __init__(self, t_ns: int) -> None:
        self.t = t_ns

    def __call__(self) -> int:
        return self.t


def _service(db, clock, journal: bool):
    cfg = HubConfig(site=SITE, location=LocationSettings(speed_of_sound_mps=340.0, source_height_m=1.5),
                    store=StoreSettings(path=str(db), journal_keep_s=3600.0 if journal else 0.0))
    tr = _Loopback()
    svc = HubService(cfg, tr, tick_s=3600.0, clock=clock)  # the test ticks (svc.tick), not the thread
    return svc, tr


def _feed(svc, clock, dets, tick_every_s=0.2):
    """Hand each (node, onset ns) to the hub 0.1 s after its onset, ticking as a live hub does."""
    for nid, t in sorted(dets, key=lambda x: x[1]):
        while clock.t + tick_every_s * S < t + S // 10:
            clock.t += int(tick_every_s * S)
            svc.tick()
        clock.t = max(clock.t, t + S // 10)
        svc._on_message(*detection(nid, t))


def _wait(svc, clock, seconds):
    for _ in range(int(seconds / 0.2)):
        clock.t += S // 5
        svc.tick()


def _incident_messages(tr):
    return [m.decode(o.payload, m.Incident) for o in tr.published if o.topic.endswith("/incident")]


def _statuses(svc, nodes):
    """Every node's status (its position), as the broker sends the retained ones on subscribing."""
    for nid, r in nodes.items():
        svc._on_message(*status(nid, r))


def _hub_with_round_1(tmp_path, rng, journal=True):
    """A started hub on a file store that has published round 1 (every node) of a burst at SOURCE; returns
    (nodes, clock, store path, service, transport)."""
    nodes = grid()
    clock = _Clock(T0_NS - S)
    db = tmp_path / "hub.sqlite"
    svc, tr = _service(db, clock, journal)
    svc.start()
    _statuses(svc, nodes)
    _feed(svc, clock, arrivals(nodes, SOURCE, T0_NS, rng))
    _wait(svc, clock, 4.0)
    return nodes, clock, db, svc, tr


def _kill_and_restart(tmp_path, journal: bool):
    """Round 1 (every node) is published; round 2 is heard by five nodes, three of them reported when the hub
    is killed, two while it is down (queued by the broker); round 3 comes after the restart. Returns the
    store, and the incident messages of the hub before and after the kill."""
    rng = np.random.default_rng(3)
    nodes, clock, db, svc1, tr1 = _hub_with_round_1(tmp_path, rng, journal)
    near = sorted(arrivals(nodes, SOURCE, T0_NS + 6 * S, rng), key=lambda x: x[1])[:5]
    _feed(svc1, clock, near[:3])
    # Killed: no stop(), nothing flushed or closed; its store connection is left as it was.
    clock.t += 5 * S
    svc2, tr2 = _service(db, clock, journal)
    svc2.start()
    _statuses(svc2, nodes)
    for nid, t in near[3:]:  # the persistent session's backlog
        svc2._on_message(*detection(nid, t))
    _wait(svc2, clock, 1.0)
    _feed(svc2, clock, arrivals(nodes, SOURCE, T0_NS + 14 * S, rng))
    _wait(svc2, clock, 30.0)  # the incident closes (gap_s 20 s)
    svc2.stop(close_incidents=True, drain_s=0.0)
    store = IncidentStore(db)
    return store, _incident_messages(tr1), _incident_messages(tr2)


def test_a_killed_hub_restarts_without_losing_or_duplicating_an_incident(tmp_path):
    store, before, after = _kill_and_restart(tmp_path, journal=True)
    rows = store.list_incidents()
    assert len(rows) == 1, [r.incident.incident_id for r in rows]  # one burst, one incident, across the kill
    inc = rows[0].incident
    assert inc.state == "closed" and inc.rounds == 3
    # Round 2: the three picks the killed hub had taken in and the two queued while it was down.
    assert sorted(s.n_nodes for s in inc.shots)[0] == 5
    assert {i.incident_id for i in before} == {i.incident_id for i in after} == {inc.incident_id}
    revs = [i.revision for i in before + after]
    assert revs == list(range(1, len(revs) + 1))  # each revision once, none skipped
    # A shot keeps its id across the kill; no id is given twice.
    first = before[-1].shots[0]
    assert [s.shot_id for s in inc.shots][0] == first.shot_id
    assert len({s.shot_id for s in inc.shots}) == 3
    assert len(store.revisions(inc.incident_id)) == len(revs)


def test_without_the_journal_the_same_kill_loses_a_round_and_splits_the_incident(tmp_path):
    """The control: what the journal (``[store] journal_keep_s``) buys in the test above."""
    store, before, after = _kill_and_restart(tmp_path, journal=False)
    rows = store.list_incidents()
    assert len(rows) == 2  # the burst's third round opened a second incident
    assert sum(r.incident.rounds for r in rows) == 2  # round 2 (two picks after the kill) was lost
    assert not list(tmp_path.glob("*.journal"))


def test_a_cleanly_stopped_hub_restarts_without_publishing_again(tmp_path):
    """The journal replayed after a clean stop finds every incident stored as it is: nothing is published,
    and the next shot starts a new incident with ids after the stored ones."""
    rng = np.random.default_rng(4)
    nodes, clock, db, svc1, tr1 = _hub_with_round_1(tmp_path, rng)
    svc1.stop(close_incidents=True, drain_s=0.0)
    first = _incident_messages(tr1)[-1]
    assert first.state == "closed"
    clock.t += 2 * S
    svc2, tr2 = _service(db, clock, True)
    svc2.start()
    assert _incident_messages(tr2) == []
    _statuses(svc2, nodes)
    _feed(svc2, clock, arrivals(nodes, (-200.0, 100.0, 1.5), clock.t + S, rng))
    _wait(svc2, clock, 4.0)
    svc2.stop(close_incidents=True, drain_s=0.0)
    new = _incident_messages(tr2)
    assert {i.incident_id for i in new} != {first.incident_id}
    assert int(new[0].incident_id.rsplit("-", 1)[1]) > int(first.incident_id.rsplit("-", 1)[1])
    assert int(new[0].shots[0].shot_id[1:]) > int(first.shots[0].shot_id[1:])
    assert len(IncidentStore(db).list_incidents()) == 2


def test_after_a_restart_the_clock_ticks_wait_for_the_backlog(tmp_path):
    svc, _ = _service(tmp_path / "hub.sqlite", _Clock(T0_NS), True)
    assert svc._backlog_in(0.0)  # no restart replay: ticks as usual
    svc._hold_ticks = True
    svc._connected_s = svc._last_message_s = 100.0
    assert not svc._backlog_in(100.2)
    svc._last_message_s = 100.3  # messages keep coming
    assert not svc._backlog_in(100.6)
    assert svc._backlog_in(100.9)  # quiet for 0.5 s
    svc._hold_ticks = True
    svc._last_message_s = 109.8
    assert svc._backlog_in(110.0)  # at most 10 s after connecting
    assert os.path.isdir(str(tmp_path / "hub.sqlite") + ".journal")


def test_a_replay_that_fails_does_not_keep_the_hub_from_starting(tmp_path, monkeypatch, caplog):
    from shotline.hub import service

    nodes, clock, db, _, _ = _hub_with_round_1(tmp_path, np.random.default_rng(5))
    monkeypatch.setattr(service, "replay", lambda *a, **k: 1 / 0)
    svc2, tr2 = _service(db, clock, True)
    svc2.start()
    assert "the journal's replay failed" in caplog.text
    _statuses(svc2, nodes)
    _feed(svc2, clock, arrivals(nodes, (-200.0, 100.0, 1.5), clock.t + S, np.random.default_rng(6)))
    _wait(svc2, clock, 4.0)
    svc2.stop(close_incidents=True, drain_s=0.0)
    new = _incident_messages(tr2)
    assert new and int(new[-1].shots[0].shot_id[1:]) > 1  # working, and counting on from the store's ids


def test_what_the_killed_hub_made_but_never_stored_is_published_after_the_restart(tmp_path, monkeypatch):
    """Killed after it made round 2 but before storing it (here: its store refused the writes): the replay makes
    round 2 again, the store holds one round, so the restarted hub publishes the incident's next revision."""
    rng = np.random.default_rng(8)
    nodes, clock, db, svc1, tr1 = _hub_with_round_1(tmp_path, rng)
    stored = IncidentStore(db).list_incidents()[0].incident
    monkeypatch.setattr(svc1.store, "put_incident", lambda *a, **k: False)
    _feed(svc1, clock, arrivals(nodes, SOURCE, T0_NS + 2 * S, rng))
    _wait(svc1, clock, 4.0)
    assert _incident_messages(tr1)[-1].rounds == 2 and stored.rounds == 1
    clock.t += 3 * S
    svc2, tr2 = _service(db, clock, True)
    svc2.start()
    sent = _incident_messages(tr2)
    assert [(i.incident_id, i.rounds, i.state) for i in sent] == [(stored.incident_id, 2, "updated")]
    assert sent[0].revision == IncidentStore(db).revisions(stored.incident_id)[-2].revision + 1
    assert IncidentStore(db).list_incidents()[0].incident.rounds == 2
    svc2.stop(close_incidents=True, drain_s=0.0)
    closed = _incident_messages(tr2)[-1]
    assert closed.state == "closed" and closed.revision == sent[0].revision + 1


def test_a_journal_that_cannot_be_written_is_logged_once_a_minute_and_the_hub_goes_on(tmp_path, caplog):
    nodes = grid()
    clock = _Clock(T0_NS - S)
    svc, tr = _service(tmp_path / "hub.sqlite", clock, True)
    svc.start()

    def full(*_a):
        raise OSError(28, "No space left on device")

    svc.journal.append = full
    _statuses(svc, nodes)
    _feed(svc, clock, arrivals(nodes, SOURCE, T0_NS, np.random.default_rng(9)))
    _wait(svc, clock, 4.0)
    svc.stop(close_incidents=True, drain_s=0.0)
    failures = [r for r in caplog.records if "journal write failed" in r.getMessage()]
    assert len(failures) == 1 and "No space left" in failures[0].getMessage()
    assert _incident_messages(tr)[-1].state == "closed"  # the hub went on

"""A restarted hub takes up where a killed one stopped: its journal replayed, its store's ids kept.

What a hub holds only in memory when it is killed: the detections it acknowledged to the broker
but has not yet made a shot of (waiting in the associator's pool for the other nodes), and its
open incidents (the next round of a burst joins one of them). The broker's persistent session
brings back only what arrived while the hub was down. So, before it subscribes, a restarted hub

1. counts shot and incident ids on from the largest in its store (an id is never given twice;
   :meth:`shotline.hub.service.HubService.recover`);
2. replays its journal (:mod:`shotline.hub.journal`) from ``[store] recover_s`` ago, and at least
   from the first shot of every incident its store holds open, through its pipeline, ticking at
   the receive times as it did live, publishing nothing: each node's latest status first (its
   position), then the messages, less the detections of incidents the store holds closed;
3. from then on gives a shot made of detections that a stored shot references that stored
   shot's id, and puts it in the stored incident, with that incident's id and revision
   (:class:`StoredIdentities`), so the same incident is not made twice;
4. then publishes what the store does not hold yet: an incident the killed hub made and never
   published, or a stored one whose replayed state has more (rounds, or its close), as its next
   revision; an incident whose replayed state the store already holds is not published again.

Then the backlog of the persistent session arrives; the hub holds its clock ticks until that
backlog is in (:meth:`shotline.hub.service.HubService.start`), so that no pick from before the
kill is expired before the picks it waits for arrive.
"""

from __future__ import annotations

import logging
from collections import Counter

import msgspec

from shotline.core import messages as m

from .pipeline import HubPipeline, Output
from .store import IncidentStore

log = logging.getLogger(__name__)


class _DetectionId(msgspec.Struct):
    detection_id: str = ""


def _detection_id(topic: str, payload: bytes) -> str | None:
    """The detection id of a journalled detection message (None for other messages and unreadable ones:
    ingest counts those as it did live)."""
    if not topic.endswith("/detection"):
        return None
    try:
        return msgspec.json.decode(payload, type=_DetectionId).detection_id or None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class StoredIdentities:
    """The ids a restarted hub takes over from its store, for the shots that the detections of its replay make
    again (each stored shot at most once). Asked by the associator for every new shot and by the incident
    builder for every new shot's incident as long as the hub runs, which costs a dict lookup: the stored
    shots of the replayed detections are read once, here."""

    def __init__(self, store: IncidentStore, detection_ids: list[str]) -> None:
        self.store = store
        self._by_detection: dict[str, tuple[str, str]] = {
            det: (shot, inc) for det, shot, inc in store.shots_of_detections(detection_ids)}
        """Detection id -> (stored shot id, stored incident id) of the stored shot that references it."""
        self._incident_of: dict[str, str] = {}
        """Stored shot id -> its stored incident id, for the shots taken over."""
        self._taken_shots: set[str] = set()
        self.stored: dict[str, m.Incident] = {}
        """Stored incident id -> its latest stored message, for the incidents the replayed detections belong to
        (read as :meth:`closed` and :meth:`incident` ask)."""

    def closed(self) -> set[str]:
        """The detections that a stored closed incident references: done with (not replayed)."""
        incidents = {inc for _shot, inc in self._by_detection.values()}
        closed = {inc for inc in incidents if self._state(inc) == "closed"}
        return {det for det, (_shot, inc) in self._by_detection.items() if inc in closed}

    def _state(self, incident_id: str) -> str | None:
        if incident_id not in self.stored:
            inc = self.store.latest_incident(incident_id)
            if inc is None:
                return None
            self.stored[incident_id] = inc
        return self.stored[incident_id].state

    def shot_id(self, detection_ids: list[str]) -> str | None:
        """The stored shot that references most of ``detection_ids`` (and is not taken yet), or None."""
        votes: Counter[tuple[str, str]] = Counter(
            self._by_detection[d] for d in detection_ids if d in self._by_detection)
        for (shot, inc), _n in votes.most_common():
            if shot not in self._taken_shots:
                self._taken_shots.add(shot)
                self._incident_of[shot] = inc
                return shot
        return None

    def incident(self, shot_id: str) -> tuple[str, int] | None:
        """(incident id, stored revision) of the stored incident that holds ``shot_id``, a shot taken over."""
        inc = self._incident_of.get(shot_id)
        if inc is None or self._state(inc) is None:
            return None
        return inc, self.stored[inc].revision


def replay_since(store: IncidentStore, now_ns: int, recover_s: float) -> int:
    """Receive time (ns) the replay starts from: ``recover_s`` before ``now_ns``, or earlier for the
    incidents the store holds open (from their first shot, less the same margin)."""
    oldest_open = store.list_incidents(states=("new", "updated"), limit=1, newest_first=False)
    first_ns = min([now_ns] + [r.incident.first_shot_ns for r in oldest_open])
    return first_ns - int(recover_s * 1e9)


def replay(pipeline: HubPipeline, store: IncidentStore, records: list[tuple[str, bytes, int]], tick_s: float,
           data_clock: bool) -> list[Output]:
    """Feed journal ``records`` (topic, payload, received ns) through ``pipeline`` as live, ticking every
    ``tick_s`` of receive time (``data_clock``: at the nodes' progress instead, as a hub with
    ``watermark = "data"``), with the store's ids taken over from then on (:class:`StoredIdentities`), and
    without the detections of incidents the store holds closed; returns what to publish (:func:`reconcile`)."""
    det_ids = [_detection_id(topic, payload) for topic, payload, _ in records]
    ids = StoredIdentities(store, [d for d in det_ids if d is not None])
    done = ids.closed()
    pipeline.assoc.adopt_shot_id = ids.shot_id
    pipeline.incidents.adopt_incident = ids.incident
    out: list[Output] = []
    next_tick = None
    for (topic, payload, rec), det in zip(records, det_ids, strict=True):
        if det is not None and det in done:
            continue
        if next_tick is None:
            next_tick = rec
        if rec >= next_tick:
            out += pipeline.tick(pipeline.data_watermark_ns() if data_clock else rec)
            next_tick = rec + int(tick_s * 1e9)
        out += pipeline.handle(topic, payload, rec)
    return reconcile(pipeline, out, ids.stored)


def _content(inc: m.Incident) -> tuple:
    """What makes a revision worth publishing: the state (closed or not), the rounds and which shots."""
    return inc.state == "closed", inc.rounds, tuple(s.shot_id for s in inc.shots)


def reconcile(pipeline: HubPipeline, outputs: list[Output], stored: dict[str, m.Incident]) -> list[Output]:
    """Of a replay's ``outputs``, what to publish: the last message of each incident whose state the store
    does not hold (``stored``: the latest stored message of each incident the replay's detections belong
    to), as the revision after the stored one (1 for an incident never stored); the open incidents' revision
    counters follow. (An incident the store holds closed is never made again: :func:`replay` leaves its
    detections out. One taken over but not rendered in the replay keeps its stored revision.)"""
    builder = pipeline.incidents
    last: dict[str, m.Incident] = {}
    for o in outputs:
        last[o.incident.incident_id] = o.incident
    open_by_id = {inc.incident_id: inc for inc in builder.open}
    due = []
    for inc_id, msg in last.items():
        before = stored.get(inc_id)
        revision = before.revision if before is not None else 0
        if before is not None and _content(before) == _content(msg):
            nxt, msg = revision, before  # the store holds this state: not published again
        else:
            nxt = revision + 1
            state = "closed" if msg.state == "closed" else ("new" if before is None else "updated")
            msg = msgspec.structs.replace(msg, revision=nxt, state=state)
            due.append(Output(msg, None))
        if inc_id in open_by_id:
            open_by_id[inc_id].revision = nxt
        elif inc_id in builder.recent_closed:  # (an operator's review follows on from it)
            builder.recent_closed[inc_id] = msg
    if due:
        log.info("restart: %d incident message(s) the store did not hold, published now", len(due))
    return due

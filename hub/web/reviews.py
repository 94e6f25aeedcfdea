"""Operator reviews: validate, store (in the hub's store), tell the browsers and the downstream publisher.

The store (:meth:`~shotline.hub.store.IncidentStore.add_review`) keeps each
review with reviewer and time and sets the incident's review state; this
module adds what the page needs around it: input checks with clear errors,
the label vocabulary, the ``on_review(incident_id, review)`` callback that
the hub wires to publish an incident update downstream, and the live event
to every open page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shotline.core.timebase import now_ns

log = logging.getLogger(__name__)

DECISIONS = ("confirm", "dismiss", "relabel")
LABELS = ("gunshot", "firework", "other")
"""Classes an operator may assign (the training labels, without "background")."""
MAX_NOTE = 2000


class ReviewError(ValueError):
    """A review request that is refused (bad decision, label, note or unknown incident)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def review_dict(r: Any) -> dict[str, Any]:
    return {"review_id": r.review_id, "incident_id": r.incident_id, "reviewer": r.reviewer, "time_ns": r.time_ns,
            "decision": r.decision, "label": r.label, "note": r.note}


class ReviewService:
    """Applies reviews to the store; ``on_review`` and ``notify`` are called after each stored review."""

    def __init__(self, store: Any, *, on_review: Callable[[str, Any], None] | None = None,
                 notify: Callable[[str, Any], None] | None = None, clock: Callable[[], int] = now_ns) -> None:
        self.store = store
        self.on_review = on_review
        self.notify = notify
        self.clock = clock

    def review(self, incident_id: str, reviewer: str, decision: str, *, label: str | None = None,
               note: str = "") -> Any:
        """Store one review and return it (a store ``Review``). Raises :class:`ReviewError`."""
        from shotline.hub.store import StoreError

        decision = (decision or "").strip().lower()
        label = (label or "").strip().lower() or None
        note = (note or "").strip()
        if decision not in DECISIONS:
            raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        if decision == "relabel" and label is None:
            raise ReviewError(f"relabel needs a label: one of {', '.join(LABELS)}")
        if label is not None and label not in LABELS:
            raise ReviewError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        if decision != "relabel":
            label = None
        if len(note) > MAX_NOTE:
            raise ReviewError(f"note is {len(note)} characters, at most {MAX_NOTE}")
        if self.store.review_state(incident_id) is None:
            raise ReviewError(f"no incident {incident_id!r}", status=404)
        try:
            rev = self.store.add_review(incident_id, reviewer, decision, note=note, label=label,  # type: ignore[arg-type]
                                        time_ns=self.clock())
        except StoreError as exc:
            raise ReviewError(str(exc)) from None
        log.info("incident %s %s by %s%s", incident_id, decision, reviewer, f" as {label}" if label else "")
        if self.on_review is not None:
            try:
                self.on_review(incident_id, rev)
            except Exception:  # the review is stored; publication problems are the publisher's to retry
                log.exception("publishing the review of %s failed", incident_id)
        if self.notify is not None:
            self.notify("review", {**review_dict(rev), "review_state": self.store.review_state(incident_id)})
        return rev

"""What people do to incidents: acknowledge and resolve, each recorded on the timeline."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.pipeline import add_event, resolve_incident
from models.tables import Incident


class IncidentNotFound(LookupError):
    pass


def acknowledge(session: Session, incident_id: int, by: str, now: datetime | None = None) -> bool:
    """Acknowledge an open incident: pending pages for it stop. False if it was not open."""
    now = now or utcnow()
    done = session.execute(
        update(Incident)
        .where(Incident.id == incident_id, Incident.status == "open")
        .values(status="acknowledged", acknowledged_at=now, acknowledged_by=by)
        .returning(Incident.id)
    ).first()
    if done is None:
        _must_exist(session, incident_id)
        return False
    add_event(session, incident_id, now, "acknowledged", actor=by)
    return True


def resolve(session: Session, incident_id: int, by: str, now: datetime | None = None) -> bool:
    """Resolve by hand. If the check still fails, its next failures open a new incident."""
    now = now or utcnow()
    if resolve_incident(session, incident_id, now, by=by, why="resolved by hand"):
        return True
    _must_exist(session, incident_id)
    return False


def _must_exist(session: Session, incident_id: int) -> None:
    if session.get(Incident, incident_id) is None:
        raise IncidentNotFound(f"no incident #{incident_id}")

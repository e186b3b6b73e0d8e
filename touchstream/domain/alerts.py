"""Churn alerts: what is sent to the people and programs that act on a weakening
relationship. Pure. The JSON form is versioned (docs/alerts.md, docs/alert.schema.json).

One episode per weakening relationship: it opens with the first alert (churn_risk or
decline), may escalate (churn_risk < decline < churned, each kind at most once and never
backwards), and closes with ``recovered`` when the customer comes back. No storm: a
kind already sent in the episode, or a lower one, is never sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

ALERT_SCHEMA_VERSION = 1
KINDS = ("churn_risk", "decline", "churned", "recovered")
LEVEL = {"churn_risk": 1, "decline": 2, "churned": 3}

# Severity grows with the customer's value: net spend tiers (in the purchase currency).
VALUE_TIERS: tuple[Decimal, ...] = (Decimal(100), Decimal(500), Decimal(2000))
SEVERITY_LABELS = ("low", "medium", "high", "critical")
CHURN_RISK_MIN_SCORE = 4.0  # negative evidence in 60 days that raises churn_risk
RISK_RECOVERY_DAYS = 14  # a purchase this long after a churn_risk alert closes the episode


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str  # customer_id/episode/kind: the same alert on a replay has the same id
    customer_id: str
    at_ms: int
    kind: str
    episode: int
    stage: str
    previous_stage: str | None
    defection_type: str
    confidence: float
    severity: int  # 1..4
    net_spend: Decimal
    last_purchase_ms: int | None
    evidence: tuple[str, ...]
    message: str
    version: int  # the customer state version that raised it

    @property
    def severity_label(self) -> str:
        return SEVERITY_LABELS[self.severity - 1]

    def to_json(self) -> dict[str, Any]:
        """The alerts topic's message (schema version ALERT_SCHEMA_VERSION)."""
        return {
            "schema_version": ALERT_SCHEMA_VERSION,
            "alert_id": self.alert_id,
            "customer_id": self.customer_id,
            "at": _iso(self.at_ms),
            "kind": self.kind,
            "episode": self.episode,
            "stage": self.stage,
            "previous_stage": self.previous_stage,
            "defection_type": self.defection_type,
            "confidence": self.confidence,
            "severity": self.severity,
            "severity_label": self.severity_label,
            "net_spend": format(self.net_spend, "f"),
            "last_purchase_at": (
                None if self.last_purchase_ms is None else _iso(self.last_purchase_ms)
            ),
            "evidence": list(self.evidence),
            "message": self.message,
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def severity(net_spend: Decimal) -> int:
    return 1 + sum(1 for tier in VALUE_TIERS if net_spend >= tier)


def sentence(
    kind: str, customer_id: str, stage: str, net_spend: Decimal, silent_days: int | None,
    defection_type: str, confidence: float, evidence: tuple[str, ...],
) -> str:
    who = f"Customer {customer_id} (net spend {net_spend:.2f})"
    why = (
        f"likely {defection_type.replace('_', '-')} defection (confidence {confidence:.2f})"
        if defection_type != "unknown" else "no clear reason in the recent touchpoints"
    )
    ev = f" Evidence: {'; '.join(evidence[-4:])}." if evidence else ""
    silent = f" after {silent_days} days without a purchase" if silent_days is not None else ""
    if kind == "churn_risk":
        return f"{who} is at risk while still {stage}: {why}.{ev}"
    if kind == "decline":
        return f"{who} is declining{silent}: {why}.{ev}"
    if kind == "churned":
        return f"{who} has churned{silent}: {why}.{ev}"
    return f"{who} is back ({stage}){silent}."

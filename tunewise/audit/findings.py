"""What a data audit reports: findings with a severity, counts, example rows and what to do."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tunewise.types import Finding, Severity

__all__ = ["Audit", "Finding", "Severity"]


@dataclass
class Audit:
    """Every finding plus the statistics behind them (rows, class counts, token lengths per split)."""

    findings: list[Finding] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def by_severity(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    def passed(self, strict: bool = False) -> bool:
        """Errors always fail; with `strict`, warnings fail too."""
        return not self.by_severity("error") and not (strict and self.by_severity("warning"))

    def to_dict(self) -> dict[str, Any]:
        counts = {severity: len(self.by_severity(severity)) for severity in ("error", "warning", "note")}
        statistics = {split: dict(stats) for split, stats in self.statistics.items()}
        return {"summary": counts, "findings": [asdict(f) for f in self.findings], "statistics": statistics}

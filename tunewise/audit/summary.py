"""The terminal summary of an audit: errors first, then warnings, then notes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tunewise.audit.findings import Audit

STYLES = {"error": "bold red", "warning": "yellow", "note": "cyan"}


def print_audit(audit: Audit, console: Console) -> None:
    table = Table(title="Data check", show_lines=True)
    for column in ("severity", "check", "finding", "example rows", "what to do"):
        table.add_column(column, overflow="fold")
    for severity in ("error", "warning", "note"):
        for finding in audit.by_severity(severity):
            table.add_row(
                f"[{STYLES[severity]}]{severity}[/]",
                finding.check,
                finding.message,
                ", ".join(map(str, finding.rows)),
                finding.fix,
            )
    console.print(table)
    summary = audit.to_dict()["summary"]
    console.print(f"{summary['error']} error(s), {summary['warning']} warning(s), {summary['note']} note(s)")

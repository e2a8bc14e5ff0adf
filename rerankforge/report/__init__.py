"""The build report: ``report.html`` with metric tables, plots and a data card, and a markdown summary."""

from __future__ import annotations

from rerankforge.report.render import REPORT_HTML, REPORT_MD, Report, write_report

__all__ = ["REPORT_HTML", "REPORT_MD", "Report", "write_report"]

"""report.json, report.md and plots of a run."""

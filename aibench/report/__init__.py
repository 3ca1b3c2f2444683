"""Reports over result files: a CSV view, one self-contained HTML page with inline SVG plots, and the JSON
that github-action-benchmark charts. Never imports torch (DESIGN.md): reporting a thousand result files
must work on a machine without the model stack.

The pieces: :mod:`~aibench.report.load` reads result files, sweep records and comparison files from files
and folders; :mod:`~aibench.report.csv_export`, :mod:`~aibench.report.html_report` and
:mod:`~aibench.report.github` turn them into the three outputs; :mod:`~aibench.report.plots` draws with
matplotlib (imported only when a page is rendered). ``docs/report.md`` is the user's reference.
"""

from aibench.report.load import ReportInputs, load_inputs

__all__ = ["ReportInputs", "load_inputs"]

"""Reports rendered from twinhull objects as read from the API. Pure: they return text or
bytes and write nothing.

:mod:`twinhull.report.drill` renders a FailoverDrill as a post-mortem in Markdown, a
timeline chart (PNG, needs the ``report`` extra: matplotlib) and JUnit XML for CI.
"""

from twinhull.report import drill

__all__ = ["drill"]

"""The "claim — measured here" table every lesson ends with.

Each row pairs a claim (from a source text in ``seeds/`` or from the lesson) with the number measured
in this run and whether the claim holds *on this machine*. A claim that does not hold is shown as
such, never hidden.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass
class Claim:
    claim: str
    source: str
    measured: str
    holds: bool | None  # None: could not be measured here (e.g. no GPU); `measured` says why


class Claims:
    """Collect claims with :meth:`add`; the object displays as a table in Jupyter and as text in print."""

    def __init__(self, lesson: str):
        self.lesson = lesson
        self.rows: list[Claim] = []

    def add(self, claim: str, source: str, measured: str, holds: bool | None) -> Claim:
        row = Claim(claim, source, measured, None if holds is None else bool(holds))
        self.rows.append(row)
        return row

    @staticmethod
    def _verdict(holds: bool | None) -> str:
        return {True: "✓ holds here", False: "✗ does not hold here", None: "— not measurable here"}[holds]

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("claim", "source", "measured here", "verdict"))
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(v))}</td>"
                             for v in (r.claim, r.source, r.measured, self._verdict(r.holds))) + "</tr>"
            for r in self.rows
        )
        return f"<b>{html.escape(self.lesson)}: claims measured in this run</b><table><tr>{head}</tr>{body}</table>"

    def __str__(self) -> str:
        lines = [f"{self.lesson}: claims measured in this run"]
        for r in self.rows:
            lines.append(f"- {r.claim} [{r.source}]\n    measured: {r.measured}\n    {self._verdict(r.holds)}")
        return "\n".join(lines)

    __repr__ = __str__

"""The "claim — measured here" table every lesson ends with.

Each row pairs a claim (from a source text in ``seeds/`` or from the lesson) with the number measured in this run
and the verdict *on this machine*: "holds", "does not hold", "inconclusive" (the interval over repeated runs
straddles the threshold, see :mod:`lessons_lib.stats`) or "not measurable" here (e.g. no GPU; ``measured`` says
why). A claim that does not hold is shown as such, never hidden.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from .stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_MEASURABLE
from .validate import BadArgument

# marks that DejaVu Sans carries (Linux desktops without an emoji font render them)
MARKS = {HOLDS: "✓ holds here", DOES_NOT_HOLD: "✗ does not hold here", INCONCLUSIVE: "? inconclusive here",
         NOT_MEASURABLE: "— not measurable here"}


def _as_verdict(holds: bool | str | None) -> str:
    if holds is None:
        return NOT_MEASURABLE
    if isinstance(holds, str):
        if holds not in MARKS:
            raise BadArgument(f"holds={holds!r}: a claim's verdict is one of {sorted(MARKS)} (or True/False/None); "
                              "get one from lessons_lib.stats.verdict")
        return holds
    if not isinstance(holds, (bool, np.bool_)) and not (getattr(holds, "dtype", None) is not None
                                                        and str(holds.dtype) == "torch.bool" and holds.numel() == 1):
        raise BadArgument(f"holds={holds!r}: a claim's verdict is one of {sorted(MARKS)}, True, False or None "
                          f"(not a {type(holds).__name__}); get one from lessons_lib.stats.verdict")
    return HOLDS if bool(holds) else DOES_NOT_HOLD


@dataclass
class Claim:
    claim: str
    source: str
    measured: str
    verdict: str  # one of lessons_lib.stats' HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURABLE

    @property
    def holds(self) -> bool | None:
        """True / False for a settled verdict, None when inconclusive or not measurable."""
        return {HOLDS: True, DOES_NOT_HOLD: False}.get(self.verdict)


class Claims:
    """Collect claims with :meth:`add`; the object displays as a table in Jupyter and as text in print."""

    def __init__(self, lesson: str, machine: str | None = None):
        """``machine``: where the figures were measured (default: this machine's CPU, cores, torch build, GPU)."""
        if machine is None:
            from .device import hardware_report

            machine = hardware_report().machine()
        self.lesson = lesson
        self.machine = machine
        self.rows: list[Claim] = []

    def add(self, claim: str, source: str, measured: str, holds: bool | str | None) -> Claim:
        """``holds``: a verdict from :func:`lessons_lib.stats.verdict`, or True / False, or None (not measurable)."""
        for name, value in (("claim", claim), ("source", source), ("measured", measured)):
            if not isinstance(value, str) or not value.strip():
                raise BadArgument(f"{name}={value!r}: must be a non-empty string (the table shows it as text)")
        row = Claim(claim, source, measured, _as_verdict(holds))
        self.rows.append(row)
        return row

    @staticmethod
    def _verdict(verdict: str) -> str:
        return MARKS[verdict]

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("claim", "source", "measured here", "verdict"))
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(v))}</td>"
                             for v in (r.claim, r.source, r.measured, self._verdict(r.verdict))) + "</tr>"
            for r in self.rows
        )
        return (f"<b>{html.escape(self.lesson)}: claims measured in this run</b><br><small>measured on: "
                f"{html.escape(self.machine)}</small><table><tr>{head}</tr>{body}</table>")

    def __str__(self) -> str:
        lines = [f"{self.lesson}: claims measured in this run", f"measured on: {self.machine}"]
        for r in self.rows:
            lines.append(f"- {r.claim} [{r.source}]\n    measured: {r.measured}\n    {self._verdict(r.verdict)}")
        return "\n".join(lines)

    __repr__ = __str__

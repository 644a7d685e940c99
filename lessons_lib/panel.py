"""The live panel: pick a device, turn a lesson's knobs, press Run, watch the run train.

Contract of an *experiment* (a plain function; tests and nbval call it without widgets)::

    experiment(*, device: str, callbacks: list[Callback], **knobs) -> History

``device`` is "cpu", "cuda" or "mps"; ``knobs`` are the values of the panel's knob widgets, by name;
the experiment passes ``callbacks`` on to :func:`lessons_lib.training.fit`.

The panel runs the experiment in a background thread (one long-lived worker), so the notebook stays live:
Stop ends the run between two optimizer steps and keeps its history (an ``EarlyStopping`` inside still
restores the best weights); controls that cannot change mid-run are disabled while it runs; a second Run
while one is running does nothing. Curves are SVG redrawn in place at most every ``redraw_seconds``.
"""

from __future__ import annotations

import html
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import ipywidgets as widgets

from .callbacks import Callback, TrainState
from .device import available_devices, gpu_unavailable_reason, synchronize
from .svgplot import PALETTE, Series, line_chart
from .timing import format_seconds
from .training import History

Experiment = Callable[..., History]


@dataclass
class RunRecord:
    """One finished run of the panel."""

    index: int
    device: str
    knobs: dict
    history: History | None
    error: str | None = None


class _Worker:
    """One long-lived background thread runs the experiments of every panel in the kernel, one at a time.

    A fresh thread per run starts cold (per-thread state such as its own malloc arena has to fault in its
    memory again): measured about 30% slower per run here, against a 5% overhead budget."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lessons-panel-worker", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            self._jobs.get()()  # a job reports its own errors (LivePanel._worker never raises)


_WORKER = _Worker()


def _gpu_device() -> str | None:
    devs = available_devices()
    return "cuda" if "cuda" in devs else ("mps" if "mps" in devs else None)


class _PanelCallback(Callback):
    """Feeds the panel from inside ``fit``: live curves, time-per-step readout, the Stop request."""

    def __init__(self, panel: LivePanel):
        self.panel = panel
        self.last_draw = 0.0
        self.last_read = 0.0
        self.last_step = 0

    def on_train_begin(self, state: TrainState) -> None:
        self.last_read = self.last_draw = time.perf_counter()
        self.last_step = 0

    def on_batch_end(self, state: TrainState) -> None:
        if self.panel._stop_event.is_set():
            state.stop_training = True
            state.stop_reason = "stopped by user"
            return
        now = time.perf_counter()
        if now - self.last_read >= self.panel.redraw_seconds:
            synchronize(state.device)  # the readout is a time: the device must be done first
            now = time.perf_counter()
            per_step = (now - self.last_read) / max(state.step - self.last_step, 1)
            self.panel._live_readout(state, per_step)
            self.last_read, self.last_step = now, state.step

    def on_epoch_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        if now - self.last_draw >= self.panel.redraw_seconds or state.epoch + 1 == state.epochs:
            self.panel._draw(state.history)
            self.last_draw = now


def _measured(rec: RunRecord) -> dict[str, str]:
    """What the experiment measured besides the curves, shown beside them: ``history.config["measured"]``, a dict
    of column name -> value (text), e.g. lesson 09's multiplications as a fraction of the dense layer's."""
    h = rec.history
    m = h.config.get("measured") if h is not None and isinstance(getattr(h, "config", None), dict) else None
    return {str(k): str(v) for k, v in m.items()} if isinstance(m, dict) else {}


class LivePanel:
    """Device toggle, knobs, Run / Stop, live loss and accuracy curves, a readout and a runs table.

    ``knobs`` maps an experiment's keyword names to ipywidgets value widgets. Display the panel by
    leaving it as the last expression of a cell. :meth:`run` starts a run from code (``wait=True``
    blocks until it ends and returns its :class:`History`).
    """

    def __init__(
        self,
        experiment: Experiment,
        knobs: Mapping[str, widgets.ValueWidget] | None = None,
        *,
        title: str = "Live experiment",
        redraw_seconds: float = 0.5,
    ):
        self.experiment = experiment
        self.title = title
        self.knobs = dict(knobs or {})
        self.redraw_seconds = redraw_seconds
        self.runs: list[RunRecord] = []
        self._idle = threading.Event()
        self._idle.set()
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._live_history: History | None = None

        gpu = _gpu_device()
        options = [("CPU", "cpu")] + ([(f"GPU ({gpu.upper()})", gpu)] if gpu else [])
        self.device_toggle = widgets.ToggleButtons(options=options, value="cpu", description="device",
                                                   style={"button_width": "110px"})
        self.gpu_note = widgets.HTML()
        children_dev: list[widgets.Widget] = [self.device_toggle]
        if gpu is None:
            reason = gpu_unavailable_reason() or "no GPU"
            self.gpu_button = widgets.Button(description="GPU", disabled=True, tooltip=reason,
                                             layout=widgets.Layout(width="110px", margin="2px 0 0 -4px"))
            self.gpu_note.value = f"<small>GPU unavailable: {html.escape(reason)}</small>"
            children_dev.append(self.gpu_button)
        self.run_button = widgets.Button(description="Run", button_style="success", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.run_button.on_click(lambda _: self.run(wait=False))
        self.stop_button.on_click(lambda _: self.stop())
        self.readout = widgets.HTML(value="<i>Press Run to train.</i>")
        self.loss_chart = widgets.HTML(value=self._empty_chart("loss"))
        self.acc_chart = widgets.HTML(value=self._empty_chart("accuracy"))
        self.table = widgets.HTML(value="")
        knob_box = widgets.VBox(list(self.knobs.values()))
        self.widget = widgets.VBox([
            widgets.HTML(f"<h4 style='margin:4px 0'>{html.escape(title)}</h4>"),
            widgets.HBox(children_dev, layout=widgets.Layout(flex_flow="row nowrap", align_items="flex-start")),
            self.gpu_note,
            knob_box,
            widgets.HBox([self.run_button, self.stop_button]),
            self.readout,
            widgets.HBox([self.loss_chart, self.acc_chart]),
            self.table,
        ])
        self.widget.add_class("lessons-live-panel")
        for w, name in ((self.readout, "readout"), (self.loss_chart, "loss-chart"), (self.acc_chart, "acc-chart"),
                        (self.table, "runs-table")):
            w.add_class(f"lessons-{name}")  # stable hooks for the browser test

    # --- display ---------------------------------------------------------------------------
    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """The live widget, plus a static HTML snapshot (charts, readout, runs table) for viewers without a
        widget manager (GitHub, nbconvert): JupyterLab renders the widget, the others the snapshot."""
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        bundle["text/html"] = self.snapshot_html()
        bundle["text/plain"] = f"LivePanel({self.title!r}, {len(self.runs)} run(s))"
        return bundle

    def snapshot_html(self) -> str:
        """The panel's current curves, readout and runs table as plain HTML (no controls)."""
        return (f"<div><b>{html.escape(self.title)}</b> <i>(static snapshot: open in JupyterLab for the live "
                f"panel)</i><div>{self.readout.value}</div><div style='display:flex'>{self.loss_chart.value}"
                f"{self.acc_chart.value}</div>{self.table.value}</div>")

    @staticmethod
    def _empty_chart(what: str) -> str:
        return line_chart([], title=what, xlabel="epoch", ylabel=what)

    def _draw(self, live: History) -> None:
        loss, acc = [], []
        for k, rec in enumerate(self.runs[-4:]):
            h = rec.history
            if h is None or not len(h):
                continue
            color = "#bbbbbb" if k < len(self.runs[-4:]) - 1 else "#999999"
            loss.append(Series(h.epoch, h.val_loss, f"run {rec.index} val", color, "4 3"))
            acc.append(Series(h.epoch, h.val_acc, f"run {rec.index} val", color, "4 3"))
        loss += [Series(live.epoch, live.train_loss, "train", PALETTE[0]),
                 Series(live.epoch, live.val_loss, "val", PALETTE[1])]
        acc += [Series(live.epoch, live.train_acc, "train", PALETTE[0]),
                Series(live.epoch, live.val_acc, "val", PALETTE[1])]
        self.loss_chart.value = line_chart(loss, title="loss (cross-entropy)", xlabel="epoch", ylabel="loss")
        self.acc_chart.value = line_chart(acc, title="accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))

    def _live_readout(self, state: TrainState, per_step: float) -> None:
        self.readout.value = (
            f"<b>running</b> on {state.device}: epoch {state.epoch + 1}/{state.epochs}, step {state.step}, "
            f"<b>{format_seconds(per_step)}/step</b>"
        )

    def _final_readout(self, rec: RunRecord) -> str:
        if rec.error:
            return f"<b style='color:#b00'>run {rec.index} failed:</b> <pre>{html.escape(rec.error)}</pre>"
        s = rec.history.summary() if rec.history else {"epochs": 0}
        if not s.get("epochs"):
            return f"run {rec.index}: no epoch finished"
        stop = f" — {html.escape(str(s['stop']))}" if s["stop"] else ""
        measured = "".join(f", {html.escape(k)} {html.escape(str(v))}" for k, v in _measured(rec).items())
        return (f"<b>run {rec.index} done</b> on {s['device']}: {s['epochs']} epochs in "
                f"{format_seconds(s['seconds'])}, <b>{s['step_ms']:.3g} ms/step</b>, "
                f"{s['samples_per_s']:,.0f} samples/s, val acc {s['val_acc']:.3f} (best {s['best_val_acc']:.3f})"
                f"{measured}{stop}")

    def _render_table(self) -> str:
        heads = [
            "#", "device", "knobs", "epochs", "train acc", "val acc", "best val", "ms/step", "samples/s", "s", "stop",
        ]
        extra = list(dict.fromkeys(k for rec in self.runs for k in _measured(rec)))  # e.g. "mults vs dense"
        heads[7:7] = extra
        rows = []
        for rec in self.runs:
            knobs = ", ".join(f"{k}={v}" for k, v in rec.knobs.items())
            s = rec.history.summary() if rec.history is not None else {"epochs": 0}
            if rec.error or not s.get("epochs"):
                cells = [rec.index, rec.device, knobs, 0, "", "", "", *([""] * len(extra)), "", "", "",
                         rec.error and "error" or ""]
            else:
                m = _measured(rec)
                cells = [rec.index, s["device"], knobs, s["epochs"], f"{s['train_acc']:.3f}", f"{s['val_acc']:.3f}",
                         f"{s['best_val_acc']:.3f}", *(m.get(k, "") for k in extra), f"{s['step_ms']:.3g}",
                         f"{s['samples_per_s']:,.0f}", f"{s['seconds']:.2f}", s["stop"]]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>{h}</th>" for h in heads)
        return f"<table class='lessons-runs'><tr>{head}</tr>{''.join(rows)}</table>" if rows else ""

    # --- running ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return not self._idle.is_set()

    def knob_values(self) -> dict:
        return {name: w.value for name, w in self.knobs.items()}

    def _set_controls(self, running: bool) -> None:
        self.run_button.disabled = running
        self.stop_button.disabled = not running
        self.device_toggle.disabled = running
        for w in self.knobs.values():
            w.disabled = running

    def run(self, wait: bool = True, device: str | None = None, **overrides) -> History | None:
        """Start a run with the current device and knob values (``overrides`` replace knob values).

        Returns the History when ``wait`` (None if a run was already going), else None at once.
        """
        with self._lock:
            if self.running:
                return None
            self._stop_event.clear()
            dev = device or self.device_toggle.value
            knobs = {**self.knob_values(), **overrides}
            self._set_controls(True)
            self.readout.value = f"<b>starting</b> on {dev}…"
            self._idle.clear()
            _WORKER.submit(lambda: self._worker(dev, knobs))
        if wait:
            self._idle.wait()
            return self.runs[-1].history
        return None

    def stop(self) -> None:
        """Ask the running experiment to stop after its current step."""
        self._stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the current run (if any) has ended."""
        self._idle.wait(timeout)

    def _worker(self, device: str, knobs: dict) -> None:
        rec = RunRecord(index=len(self.runs) + 1, device=device, knobs=knobs, history=None)
        try:
            rec.history = self.experiment(device=device, callbacks=[_PanelCallback(self)], **knobs)
        except Exception as e:  # shown in the panel, never lost in a thread
            rec.error = f"{type(e).__name__}: {e}"
            self.last_traceback = traceback.format_exc()
        try:
            if rec.history is not None:
                self._draw(rec.history)
            self.runs.append(rec)
            self.table.value = self._render_table()
            self.readout.value = self._final_readout(rec)
            self._set_controls(False)
        finally:
            self._idle.set()

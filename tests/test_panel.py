import threading
import time

import ipywidgets as w
import pytest

from lessons_lib import data, models, seeds, training
from lessons_lib.device import available_devices
from lessons_lib.panel import LivePanel


def experiment(*, device, callbacks, width=16, epochs=3, fail=False):
    if fail:
        raise RuntimeError("boom")
    seeds.seed_everything(0)
    model = models.mlp(64, [width], 10)
    return training.fit(model, data.load("digits"), epochs=epochs, device=device, callbacks=callbacks)


def make(**kw):
    knobs = {"width": w.IntSlider(16, 4, 64), "epochs": w.IntSlider(3, 1, 500)}
    return LivePanel(experiment, knobs, redraw_seconds=0.0, **kw)


def test_run_fills_curves_readout_and_table():
    p = make()
    empty_chart = p.loss_chart.value
    h = p.run()
    assert len(h) == 3 and len(p.runs) == 1
    assert p.loss_chart.value != empty_chart and p.loss_chart.value.count("<polyline") == 2
    assert "run 1 done" in p.readout.value and "ms/step" in p.readout.value
    assert p.table.value.count("<tr>") == 2  # header + one run
    assert not p.run_button.disabled and p.stop_button.disabled


def test_same_experiment_runs_without_widgets():
    h = experiment(device="cpu", callbacks=[], epochs=2)
    assert len(h) == 2


def test_runs_table_grows_and_keeps_knobs():
    p = make()
    p.run()
    p.knobs["width"].value = 32
    p.run()
    assert [r.knobs["width"] for r in p.runs] == [16, 32]
    assert p.table.value.count("<tr>") == 3 and "width=32" in p.table.value


def test_stop_ends_run_between_steps_and_keeps_history():
    p = make()
    p.knobs["epochs"].value = 500
    p.run(wait=False)
    time.sleep(0.3)
    assert p.running and p.run_button.disabled and p.knobs["epochs"].disabled and p.device_toggle.disabled
    p.stop()
    p.join(10)
    assert not p.running
    h = p.runs[-1].history
    assert h.stop_reason == "stopped by user" and 1 <= len(h) < 500
    assert not p.run_button.disabled and not p.knobs["epochs"].disabled


def test_double_run_starts_only_one():
    p = make()
    p.knobs["epochs"].value = 200
    started = []
    orig = p.experiment

    def counting(**kw):
        started.append(threading.get_ident())
        return orig(**kw)

    p.experiment = counting
    p.run(wait=False)
    assert p.run(wait=False) is None and p.run(wait=True) is None
    p.run_button.click()
    p.stop()
    p.join(10)
    assert len(started) == 1 and len(p.runs) == 1


def test_error_in_experiment_is_shown_not_lost():
    p = make()
    p.run(fail=True)
    assert p.runs[-1].error == "RuntimeError: boom"
    assert "failed" in p.readout.value and not p.run_button.disabled


def test_gpu_toggle_state_matches_hardware():
    p = make()
    values = [v for _, v in p.device_toggle.options]
    if len(available_devices()) == 1:
        assert values == ["cpu"] and p.gpu_button.disabled and "GPU unavailable" in p.gpu_note.value
    else:
        assert values[1] in ("cuda", "mps")


@pytest.mark.parametrize("dev", available_devices())
def test_run_on_every_device(dev):
    p = make()
    h = p.run(device=dev)
    assert h.device.startswith(dev)


def test_device_change_mid_run_does_not_touch_the_running_run():
    p = make()
    p.knobs["epochs"].value = 300
    p.run(wait=False)
    time.sleep(0.2)
    options = [v for _, v in p.device_toggle.options]
    p.device_toggle.value = options[-1]  # what a click would do if the toggle were not disabled
    p.knobs["width"].value = 64
    p.stop()
    p.join(10)
    rec = p.runs[-1]
    assert rec.error is None and rec.device == "cpu" and rec.knobs["width"] == 16


def test_display_bundle_has_widget_and_static_snapshot():
    p = make()
    p.run()
    b = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in b
    snap = b["text/html"]
    assert snap.count("<polyline") == 4 and "lessons-runs" in snap and "run 1 done" in snap


def test_what_an_experiment_measured_gets_its_own_column():
    """``history.config["measured"]`` (e.g. lesson 09's multiplications) stands beside accuracy and ms/step."""

    def measuring(*, device, callbacks, width=16, epochs=1):
        h = experiment(device=device, callbacks=callbacks, width=width, epochs=epochs)
        h.config["measured"] = {"mults vs dense": f"{width / 64:.0%}"}
        return h

    p = LivePanel(measuring, {"width": w.IntSlider(16, 4, 64), "epochs": w.IntSlider(1, 1, 5)}, redraw_seconds=0.0)
    p.run()
    p.run(width=32)
    heads = p.table.value.split("</tr>")[0]
    assert heads.index("val acc") < heads.index("mults vs dense") < heads.index("ms/step")
    assert "<td>25%</td>" in p.table.value and "<td>50%</td>" in p.table.value
    assert "mults vs dense 50%" in p.readout.value

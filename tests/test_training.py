import pytest
import torch

from lessons_lib import data, models, seeds, training
from lessons_lib.callbacks import Callback, StopAfterSteps
from lessons_lib.device import available_devices
from lessons_lib.early_stopping.reference import EarlyStopping


def small(seed=0):
    seeds.seed_everything(seed)
    return models.mlp(64, [32], 10), data.load("digits", seed=seed)


def test_fit_learns_digits_and_fills_history():
    model, d = small()
    h = training.fit(model, d, epochs=5, lr=3e-3, batch_size=64)
    assert len(h) == 5 and h.epoch == [0, 1, 2, 3, 4]
    assert h.val_acc[-1] > 0.85 and h.train_loss[-1] < h.train_loss[0]
    assert all(s > 0 for s in h.seconds) and all(r > 0 for r in h.samples_per_s)
    assert h.steps == 5 * 18  # ceil(1150 / 64) steps per epoch
    assert h.step_seconds[0] == pytest.approx(h.seconds[0] / 18)
    assert h.summary()["epochs"] == 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deterministic_on_cpu_for_a_seed(seed):
    runs = []
    for _ in range(2):
        model, d = small(seed)
        runs.append(training.fit(model, d, epochs=2, seed=seed).val_loss)
    assert runs[0] == runs[1]


def test_different_seeds_differ():
    a = training.fit(*small(0), epochs=1, seed=0).val_loss
    b = training.fit(*small(1), epochs=1, seed=1).val_loss
    assert a != b


def test_callbacks_contract_order_and_stop():
    events = []

    class Spy(Callback):
        def on_train_begin(self, s): events.append("begin")
        def on_batch_end(self, s): events.append("batch")
        def on_epoch_end(self, s): events.append(("epoch", s.epoch, round(s.logs["val_acc"], 6)))
        def on_train_end(self, s): events.append("end")

    model, d = small()
    h = training.fit(model, d, epochs=3, batch_size=512, callbacks=[Spy()])
    assert events[0] == "begin" and events[-1] == "end"
    assert events.count("batch") == 3 * 3
    assert [e[1] for e in events if isinstance(e, tuple)] == [0, 1, 2]
    assert [e[2] for e in events if isinstance(e, tuple)] == [round(v, 6) for v in h.val_acc]


def test_stop_mid_epoch_keeps_partial_history():
    model, d = small()
    h = training.fit(model, d, epochs=10, batch_size=64, callbacks=[StopAfterSteps(25)])
    assert h.steps == 25 and len(h) == 2 and h.stop_reason == "stopped after 25 steps"


def test_early_stopping_inside_fit_restores_best_weights():
    seeds.seed_everything(0)
    d = data.load("mnist1d").subset_train(400)
    model = models.mlp(40, [256, 256], 10)
    es = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    h = training.fit(model, d, epochs=200, lr=3e-3, callbacks=[es])
    assert len(h) < 200 and es.stopped_epoch == len(h) - 1
    assert h.best_epoch == es.best_epoch == min(range(len(h)), key=h.val_loss.__getitem__)
    loss, _ = training.evaluate(model, d.x_val.to("cpu"), d.y_val)
    assert loss == pytest.approx(h.val_loss[es.best_epoch], rel=1e-5)


def test_empty_training_set_is_a_clear_error():
    model, d = small()
    d.x_train, d.y_train = d.x_train[:0], d.y_train[:0]
    with pytest.raises(ValueError, match="empty training set"):
        training.fit(model, d, epochs=1)


def test_bad_optimizer_and_epochs():
    model, d = small()
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        training.fit(model, d, optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"epochs=0: must be a whole number in \[1, inf\]"):
        training.fit(model, d, epochs=0)


@pytest.mark.parametrize("dev", available_devices())
def test_fit_on_every_device(dev):
    model, d = small()
    h = training.fit(model, d, epochs=3, lr=1e-2, batch_size=64, device=dev)
    assert h.device.startswith(dev) and h.val_acc[-1] > 0.8
    assert next(model.parameters()).device.type == dev


def test_mlp_builder():
    m = models.mlp(10, [20, 30], 5, activation="tanh", dropout=0.5)
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert m[2].p == 0.5
    assert models.count_parameters(m) == 10 * 20 + 20 + 20 * 30 + 30 + 30 * 5 + 5
    assert m(torch.zeros(3, 10)).shape == (3, 5)
    with pytest.raises(ValueError, match="probability to DROP"):
        models.mlp(10, [20], 5, dropout=1.0)
    with pytest.raises(ValueError, match="activation='swish': must be one of"):
        models.mlp(10, [20], 5, activation="swish")

"""Lesson 03, dropout: a fast CPU dropout for torch, and the lesson's experiments, claims and checks.

``FastDropout(p)`` has ``nn.Dropout``'s math (training: zero with probability ``p``, scale the rest by
1/(1-p); eval: identity) and a correct backward (the scaled mask is saved; dx = dout * mask / (1-p)).
On the CPU its mask comes from
:func:`lessons_lib.masks.bernoulli_mask` (random bits at memory speed) instead of torch's per-element
generator; on CUDA / MPS it calls the native kernel (the GPU's generator is already fast).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..claims import Claims
from ..data import Splits
from ..data import load as load_data
from ..exercises import check
from ..masks import bernoulli_mask, check_method
from ..models import mlp
from ..seeds import get_seed, seed_everything
from ..timing import interleaved_medians
from ..training import History, evaluate, fit
from ..validate import check_p


def _torch_seeded_generator(gen: np.random.Generator) -> np.random.Generator:
    """Re-seed ``gen`` (PCG64) from torch's global CPU generator, so masks follow ``torch.manual_seed``."""
    a, b = (int(v) for v in torch.empty(2, dtype=torch.int64).random_().tolist())  # two draws in [0, 2^63)
    gen.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": (a << 64) | b, "inc": (b << 1) | 1},
                               "has_uint32": 0, "uinteger": 0}
    return gen


_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


class FastDropout(nn.Module):
    """Inverted dropout with ``nn.Dropout``'s semantics and a fast CPU mask.

    ``p``: probability to DROP, in [0, 1). ``method``: the CPU mask generator ("auto" = fastest within 2^-16
    of 1 - p, see :mod:`lessons_lib.masks`). ``rng``: a numpy Generator for the masks; None (default) draws
    a fresh stream state from torch's global generator at every call, so ``torch.manual_seed`` makes runs
    reproducible exactly as with ``nn.Dropout``. On CUDA / MPS tensors the native ``F.dropout`` is used.
    """

    def __init__(self, p: float = 0.5, method: str = "auto", rng: np.random.Generator | None = None):
        super().__init__()
        self.p = check_p(p)
        self.method = check_method(method)
        self.rng = rng
        self._own = np.random.Generator(np.random.PCG64(0))

    def extra_repr(self) -> str:
        return f"p={self.p}, method={self.method!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        gen = self.rng if self.rng is not None else _torch_seeded_generator(self._own)
        keep = bernoulli_mask(tuple(x.shape), self.p, method=self.method, rng=gen)
        scale = 1.0 / (1.0 - self.p)
        np_dtype = _NUMPY_FLOATS.get(x.dtype)
        if np_dtype is not None:
            # one numpy pass writes the scaled mask (bool -> float, times 1/(1-p)): less memory traffic than
            # converting in torch and scaling in a second pass (measured ~25% faster forward+backward)
            m = torch.from_numpy(np.multiply(keep, np_dtype(scale), dtype=np_dtype))
        else:  # e.g. bfloat16, which numpy lacks: uint8 -> float is vectorized in torch (bool -> float is not)
            m = torch.from_numpy(keep.view(np.uint8)).to(x.dtype).mul_(scale)
        # Plain autograd: ``mul`` saves only ``m`` for the backward (dx = dout * m), as a hand-written
        # autograd.Function would, and was measured faster than one (no Python call in the backward pass).
        return x * m


# --------------------------------------------------------------------------------------------------
# Lesson 03 experiments
# --------------------------------------------------------------------------------------------------
DROPOUT_LAYERS = {"nn.Dropout": nn.Dropout, "FastDropout": FastDropout}
WIDTHS = (256, 256)
N_TRAIN = 1000  # a small training set: overfitting (and what dropout does about it) shows within seconds
EPOCHS = 40


def lesson_splits(n_train: int = N_TRAIN, seed: int | None = None) -> Splits:
    """mnist1d with only the first ``n_train`` training signals (val set unchanged: 800 signals)."""
    return load_data("mnist1d", seed=seed).subset_train(n_train)


def compare_with_nn_dropout(p: float = 0.5, shape: tuple[int, int] = (512, 1024), seed: int | None = None) -> dict:
    """FastDropout and nn.Dropout on ``ones(shape)``: mean, variance, dropped fraction, and the theory
    (mean 1, variance p/(1-p), dropped p); plus torch.autograd.gradcheck of FastDropout in float64."""
    seed_everything(seed)
    x = torch.ones(*shape)
    out = {"theory": {"mean": 1.0, "var": p / (1 - p), "dropped": p}}
    for name, layer in (("FastDropout", FastDropout(p)), ("nn.Dropout", nn.Dropout(p))):
        y = layer.train()(x)
        out[name] = {"mean": y.mean().item(), "var": y.var().item(), "dropped": (y == 0).float().mean().item()}
    layer = FastDropout(p).train()
    xg = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)

    def fixed_mask(t):
        torch.manual_seed(123)  # the same mask at each evaluation, as within one step
        return layer(t)

    out["gradcheck"] = bool(torch.autograd.gradcheck(fixed_mask, (xg,)))
    return out


def stats_table(cmp: dict) -> str:
    lines = [f"{'':<12} {'mean':>8} {'variance':>9} {'dropped':>8}"]
    for k in ("theory", "FastDropout", "nn.Dropout"):
        r = cmp[k]
        lines.append(f"{k:<12} {r['mean']:>8.4f} {r['var']:>9.4f} {r['dropped']:>8.4f}")
    return "\n".join(lines)


def build_model(p: float, impl: str = "nn.Dropout", widths: Sequence[int] = WIDTHS, n_in: int = 40,
                n_out: int = 10) -> nn.Sequential:
    """The lesson's MLP: ``n_in -> widths -> n_out``, ReLU, dropout ``p`` after each hidden layer."""
    if impl not in DROPOUT_LAYERS:
        raise ValueError(f"unknown dropout implementation {impl!r}: choose one of {', '.join(DROPOUT_LAYERS)}")
    return mlp(n_in, list(widths), n_out, dropout=p, dropout_layer=DROPOUT_LAYERS[impl])


def train_one(splits: Splits, p: float, *, epochs: int = EPOCHS, impl: str = "nn.Dropout", widths=WIDTHS,
              lr: float = 2e-3, batch_size: int = 128, device: str = "cpu", callbacks=(),
              seed: int | None = None) -> tuple[nn.Module, History]:
    """Build (seeded) and train the lesson's MLP with dropout ``p``; return (model, history)."""
    seed = get_seed() if seed is None else seed
    seed_everything(seed)
    model = build_model(p, impl, widths, splits.n_features, splits.n_classes)
    h = fit(model, splits, epochs=epochs, lr=lr, batch_size=batch_size, device=device, callbacks=callbacks,
            seed=seed, eval_train=True, config={"p": p, "impl": impl})
    return model, h


@dataclass
class Sweep:
    """Histories of one run per dropout rate (same data, seed and epochs)."""

    ps: list[float]
    histories: dict[float, History]
    models: dict[float, nn.Module] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        out = []
        for p in self.ps:
            h = self.histories[p]
            bi, bv = h.best("val_acc")
            out.append({"p": p, "train_acc": h.train_acc[-1], "val_acc": h.val_acc[-1], "best_val_acc": bv,
                        "gap": h.train_acc[-1] - h.val_acc[-1], "epoch_s": float(np.median(h.seconds))})
        return out

    def table(self) -> str:
        lines = [f"{'p':>5} {'train acc':>10} {'val acc':>8} {'best val':>9} {'gap':>7} {'s/epoch':>8}"]
        for r in self.rows():
            lines.append(f"{r['p']:>5.2f} {r['train_acc']:>10.3f} {r['val_acc']:>8.3f} {r['best_val_acc']:>9.3f} "
                         f"{r['gap']:>7.3f} {r['epoch_s']:>8.3f}")
        return "\n".join(lines)


def dropout_sweep(ps: Sequence[float] = (0.0, 0.2, 0.5), *, epochs: int = EPOCHS, impl: str = "nn.Dropout",
                  splits: Splits | None = None, device: str = "cpu", seed: int | None = None) -> Sweep:
    """Train the lesson's MLP once per dropout rate in ``ps`` (train acc measured in eval mode)."""
    splits = splits if splits is not None else lesson_splits(seed=seed)
    hs, models = {}, {}
    for p in ps:
        models[p], hs[p] = train_one(splits, p, epochs=epochs, impl=impl, device=device, seed=seed)
    return Sweep(list(ps), hs, models)


def plot_sweep(sweep: Sweep, path: str | None = None):
    """Train (dashed) and val (solid) accuracy per epoch, one colour per dropout rate; returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for i, p in enumerate(sweep.ps):
        h = sweep.histories[p]
        c = f"C{i}"
        ax.plot(np.array(h.epoch) + 1, h.train_acc, "--", color=c, label=f"p={p:g} train")
        ax.plot(np.array(h.epoch) + 1, h.val_acc, "-", color=c, label=f"p={p:g} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("mnist1d MLP: the train/val gap with and without dropout")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(ncol=len(sweep.ps), fontsize=8, loc="lower right")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=90)
    return fig


def train_vs_eval(model: nn.Module, splits: Splits, repeats: int = 5) -> dict[str, float | list[float]]:
    """Val accuracy of a dropout model in eval mode (deterministic) vs left in train mode (noisy, lower).

    Returns ``{"eval": acc, "train_mode": [acc per repeat], "eval_repeat_equal": bool}``.
    """
    x, y = splits.x_val, splits.y_val
    model.eval()
    with torch.no_grad():
        a1 = (model(x).argmax(1) == y).float().mean().item()
        a2 = (model(x).argmax(1) == y).float().mean().item()
        model.train()
        train_accs = [(model(x).argmax(1) == y).float().mean().item() for _ in range(repeats)]
    model.eval()
    return {"eval": a1, "train_mode": train_accs, "eval_repeat_equal": a1 == a2}


@dataclass
class ComputeToTarget:
    """Seed 002 measured: time per epoch, epochs to reach ``target`` val accuracy, compute to target."""

    target: float
    rows: list[dict]

    def table(self) -> str:
        lines = [f"target val accuracy: {self.target:.3f}",
                 f"{'run':<26} {'s/epoch':>8} {'epochs to target':>17} {'s to target':>12}"]
        for r in self.rows:
            e = "not reached" if r["epochs"] is None else str(r["epochs"])
            s = "—" if r["seconds"] is None else f"{r['seconds']:.2f}"
            lines.append(f"{r['run']:<26} {r['epoch_s']:>8.3f} {e:>17} {s:>12}")
        return "\n".join(lines)

    def get(self, run: str) -> dict:
        return next(r for r in self.rows if r["run"] == run)


def epochs_to_target(h: History, target: float) -> int | None:
    """Epochs (1-based count) until val accuracy first reaches ``target``; None if never."""
    i = h.first_epoch_reaching("val_acc", target)
    return None if i is None else i + 1


def compute_to_target(runs: dict[str, History], target: float | None = None,
                      baseline: str | None = None) -> ComputeToTarget:
    """For each named run: median seconds per epoch, epochs to ``target``, and their product.

    ``target`` defaults to 98% of the ``baseline`` run's best val accuracy (the first run by default), a
    level the no-dropout run reaches by construction.
    """
    names = list(runs)
    base = runs[baseline or names[0]]
    if target is None:
        target = 0.98 * base.best("val_acc")[1]
    rows = []
    for name, h in runs.items():
        e = epochs_to_target(h, target)
        ep_s = float(np.median(h.seconds))
        rows.append({"run": name, "epoch_s": ep_s, "epochs": e, "seconds": None if e is None else e * ep_s,
                     "best_val_acc": h.best("val_acc")[1], "device": h.device})
    return ComputeToTarget(target, rows)


def epoch_costs(splits: Splits, p: float = 0.5, device: str = "cpu", epochs: int = 4,
                sweep: Sweep | None = None) -> dict[str, float]:
    """Median training seconds per epoch: no dropout, ``nn.Dropout(p)``, ``FastDropout(p)`` (short runs; the
    first epoch is a warm-up). Runs already in ``sweep`` (same device) are reused."""
    out = {}
    for name, pp, impl in (("no dropout", 0.0, "nn.Dropout"), (f"nn.Dropout({p:g})", p, "nn.Dropout"),
                           (f"FastDropout({p:g})", p, "FastDropout")):
        if sweep is not None and impl == "nn.Dropout" and pp in sweep.histories and \
                sweep.histories[pp].device.startswith(str(device)):
            secs = sweep.histories[pp].seconds[1:]
        else:
            secs = train_one(splits, pp, epochs=epochs, impl=impl, device=device)[1].seconds[1:]
        out[name] = float(np.median(secs))
    return out


def gpu_compute_to_target(splits: Splits, p: float = 0.5, epochs: int = EPOCHS) -> ComputeToTarget | None:
    """The compute-to-target comparison on the GPU (CUDA or MPS), or None when there is none."""
    from ..device import available_devices

    gpus = [d for d in available_devices() if d != "cpu"]
    if not gpus:
        return None
    runs = {f"{gpus[0]} p=0": train_one(splits, 0.0, epochs=epochs, device=gpus[0])[1],
            f"{gpus[0]} p={p:g}": train_one(splits, p, epochs=epochs, device=gpus[0])[1]}
    return compute_to_target(runs)


COST_KEYS = ("clone", "torch.rand", "bernoulli_ mask", "F.dropout fwd", "F.dropout fwd+bwd", "FastDropout fwd+bwd")


def dropout_layer_cost(shape: tuple[int, int] = (128, 1024), p: float = 0.5, device: str = "cpu",
                       repeats: int = 15) -> dict[str, float]:
    """Median seconds on ``device`` of: copying the tensor (``clone``), drawing one uniform float per element
    (``torch.rand``), drawing the Bernoulli mask alone the way the CPU kernel does (``bernoulli_``),
    ``F.dropout`` forward, and forward+backward of ``F.dropout`` and ``FastDropout``.

    If ``F.dropout fwd`` costs many clones and most of it is the ``bernoulli_`` mask alone, its time goes into
    the random number generator, not into the arithmetic."""
    dev = torch.device(device)
    x = torch.randn(*shape, device=dev)
    xg = x.clone().requires_grad_(True)
    g = torch.ones(*shape, device=dev)
    fast = FastDropout(p).train()

    def fb(fn):
        def step():
            fn(xg).backward(g)
            xg.grad = None
        return step

    fns = {
        "clone": lambda: x.clone(),
        "torch.rand": lambda: torch.rand(*shape, device=dev),
        "bernoulli_ mask": lambda: torch.empty_like(x).bernoulli_(1.0 - p),
        "F.dropout fwd": lambda: F.dropout(x, p, training=True),
        "F.dropout fwd+bwd": fb(lambda t: F.dropout(t, p, training=True)),
        "FastDropout fwd+bwd": fb(fast),
    }
    return interleaved_medians(fns, repeats, warmup=3, device=dev)


def cost_lines(cost: dict[str, float]) -> str:
    """The cost dict as lines: µs and multiples of a clone."""
    return "\n".join(f"  {k:<20} {v * 1e6:9.0f} µs  ({v / cost['clone']:6.1f}x a clone)" for k, v in cost.items())


def rng_bound_claim(c: Claims, cost: dict[str, float], source: str) -> None:
    """Add the row 'PyTorch's CPU dropout is RNG-bound' to ``c``: F.dropout forward >= 10 clones, and
    drawing its Bernoulli mask alone accounts for at least half of it."""
    r = cost["F.dropout fwd"] / cost["clone"]
    share = cost["bernoulli_ mask"] / cost["F.dropout fwd"]
    c.add("PyTorch's CPU dropout is bound by its random number generator, not by moving the data", source,
          f"F.dropout forward = {r:.0f}x a clone; drawing its mask alone (bernoulli_) = {100 * share:.0f}% of it",
          r >= 10 and share >= 0.5)


# --------------------------------------------------------------------------------------------------
# The live panel's experiment
# --------------------------------------------------------------------------------------------------
def experiment(*, device: str, callbacks: list, p: float = 0.5, impl: str = "nn.Dropout", epochs: int = 20,
               width: int = 256, n_train: int = N_TRAIN) -> History:
    """Panel experiment: the lesson's MLP (two hidden layers of ``width``) with dropout ``p``, ``n_train``
    mnist1d training signals (the size knob: raise it on a fast machine or a GPU)."""
    splits = lesson_splits(n_train)
    seed_everything()
    model = build_model(p, impl, (width, width), splits.n_features, splits.n_classes)
    return fit(model, splits, epochs=epochs, lr=2e-3, device=device, callbacks=callbacks, eval_train=True,
               config={"p": p, "impl": impl, "width": width})


def make_panel():
    """The lesson's panel: p, dropout implementation, width, training-set size, epochs; CPU / GPU."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "p": w.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.1, description="p (drop)", style=style),
        "impl": w.ToggleButtons(options=["nn.Dropout", "FastDropout"], value="nn.Dropout", description="dropout",
                                style=style),
        "width": w.SelectionSlider(options=[64, 128, 256, 512, 1024], value=256, description="width", style=style),
        "n_train": w.SelectionSlider(options=[250, 500, 1000, 2000, 3200], value=N_TRAIN, description="train size",
                                     style=style),
        "epochs": w.IntSlider(value=20, min=1, max=100, description="epochs", style=style),
    }
    return LivePanel(experiment, knobs, title="Dropout: an MLP on MNIST-1D")


# --------------------------------------------------------------------------------------------------
# Claims and checks
# --------------------------------------------------------------------------------------------------
def lesson_claims(sweep: Sweep, ctt: ComputeToTarget, p_drop: float, cost: dict[str, float],
                  gpu_ctt: ComputeToTarget | None = None, epoch_cost: dict[str, float] | None = None) -> Claims:
    """The lesson's claims table from the sweep, the compute-to-target table, the layer and epoch costs."""
    c = Claims("03 dropout")
    h0, hp = sweep.histories[0.0], sweep.histories[p_drop]
    gap0, gapp = h0.train_acc[-1] - h0.val_acc[-1], hp.train_acc[-1] - hp.val_acc[-1]
    c.add("Without regularization the network overfits: train accuracy far above val accuracy",
          "002 (over-fitting), 004", f"train-val gap {gap0:.3f} at p=0 (train {h0.train_acc[-1]:.3f})", gap0 > 0.1)
    c.add(f"Dropout (p={p_drop:g}) shrinks the train/val gap", "002 ('NO' half), 004",
          f"gap {gap0:.3f} → {gapp:.3f}", gapp < gap0)
    b0, bp = h0.best("val_acc")[1], hp.best("val_acc")[1]
    c.add(f"Dropout (p={p_drop:g}) improves the best val accuracy", "002 ('NO': it is needed)",
          f"best val acc {b0:.3f} → {bp:.3f}", bp > b0)
    r0, rp = ctt.rows[0], ctt.rows[1]
    if r0["seconds"] is not None and rp["seconds"] is not None:
        ratio = rp["seconds"] / r0["seconds"]
        c.add(f"'Dropout wastes compute': reaching the same val accuracy ({ctt.target:.3f}) costs more with it",
              "002 ('YES' half), CPU", f"{rp['seconds']:.2f} s vs {r0['seconds']:.2f} s to target ({ratio:.2f}x; "
              f"{rp['epochs']} vs {r0['epochs']} epochs)", ratio > 1.0)
    else:
        c.add("'Dropout wastes compute': reaching the same val accuracy costs more with it", "002, CPU",
              "a run did not reach the target", rp["seconds"] is None)
    if epoch_cost is not None:
        names = list(epoch_cost)
        r_nn = epoch_cost[names[1]] / epoch_cost[names[0]]
        r_fast = epoch_cost[names[2]] / epoch_cost[names[0]]
        c.add("An epoch with dropout costs more time than one without (CPU)", "002 ('YES' half)",
              f"{names[1]}: {r_nn:.2f}x, {names[2]}: {r_fast:.2f}x the no-dropout epoch", r_nn > 1.0)
    ratio = rp["epochs"] / r0["epochs"] if rp["epochs"] and r0["epochs"] else float("nan")
    c.add("'The GPU has to work twice as hard' (p = 0.5: about 2x the epochs to the same accuracy)", "002",
          f"{ratio:.2f}x the epochs", None if math.isnan(ratio) else 1.5 <= ratio <= 2.5)
    if gpu_ctt is None:
        c.add("The same on a GPU", "002", "no GPU on this machine", None)
    else:
        g0, gp = gpu_ctt.rows[0], gpu_ctt.rows[1]
        ok = g0["seconds"] is not None and gp["seconds"] is not None
        c.add("The same on a GPU: reaching the target costs more with dropout", "002, GPU",
              f"{gp['seconds']} s vs {g0['seconds']} s" if ok else "a run did not reach the target",
              (gp["seconds"] > g0["seconds"]) if ok else None)
    rng_bound_claim(c, cost, "lesson 04 finding")
    return c


def check_inverted_scale(answer) -> bool:
    """Exercise: with p = 0.2 (drop 20%), by what factor does inverted dropout scale the kept units?"""
    return check(answer, 1.25, rel_tol=1e-6, praise="1/(1-p) = 1/0.8: the expected output equals the input.",
                 hint="the kept fraction is 1-p; scale so that the mean is unchanged.")


def check_eval_output(answer) -> bool:
    """Exercise: what does dropout(x) return in eval mode? Answer 'x' (identity)."""
    return check(answer, "x", normalize=lambda s: str(s).strip().lower().replace(" ", ""),
                 praise="in eval mode inverted dropout is the identity: no mask, no scaling.",
                 hint="in eval mode nothing is dropped, and inverted dropout already scaled during training.")


def check_expected_kept(answer) -> bool:
    """Exercise: a 128 x 1024 activation with p = 0.25: how many units are kept on average?"""
    return check(answer, 128 * 1024 * 0.75, rel_tol=1e-9, praise="n (1-p) = 131072 x 0.75.",
                 hint="each of the 128*1024 units survives with probability 1-p.")


def check_mode_for_validation(answer) -> bool:
    """Exercise: which mode must a model be in when measuring validation accuracy? ('eval' or 'train')"""
    return check(answer, "eval", normalize=lambda s: str(s).strip().lower().replace("model.", "").strip("()"),
                 praise="model.eval() switches dropout off (and batch norm to its running averages).",
                 hint="in train mode the masks keep changing, so the accuracy is noisy and lower.")


__all__ = ["FastDropout", "dropout_sweep", "compute_to_target", "train_vs_eval", "experiment", "lesson_claims",
           "dropout_layer_cost", "evaluate", "fit"]

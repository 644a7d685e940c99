"""Lesson 09 in the paper's regime: row-sparse updates, small batches, tables rebuilt on a thinning schedule,
trained until dense has converged; LSH against dense, random, the exact top-k oracle and an equal-compute dense net.

The released code (rdspring1/LSH_DeepLearning) trains one example at a time with Adagrad, and only the active
units' weights move. Here: mini-batches of ``batch_size``; Adagrad (or plain SGD) applied to the ROWS of the
units some example of the batch used (:func:`sparse_step_`): inactive units' weights, incoming and outgoing, and
their optimizer state stay bit-identical. Every method uses the same optimizer; dense and the narrow net update
all rows (every unit is active). Each method selects its units the same way in training and in evaluation (LSH
with the tables of its last scheduled rebuild). CPU only (the data is moved with ``.to("cpu")``), one thread.

Units: "mults" are scalar multiplications of the HIDDEN layer per training example: ``matmul`` (forward + weight
gradient: ``2 * k * n_in``; the first layer needs no input gradient), ``selection`` (LSH: pooling and hashing the
query, ``pool_dim + pool_dim*K*L``; top-k: every pre-activation, ``width * n_in``) and ``rebuild`` (hashing all
rows, ``width * (pool_dim + pool_dim*K*L)`` per rebuild, amortized over the examples). The output layer (10
classes) is left out for every method. ``active_fraction`` is the fraction of hidden units KEPT.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..data import Splits, load
from ..lsh import LshIndex, RebuildSchedule, check_active_fraction, check_k_l, units_kept
from ..seeds import check_seed, get_seed, replicate_seeds, torch_generator
from ..stats import DOES_NOT_HOLD, HOLDS, Interval, Verdict, mean_interval, paired_interval, verdict
from ..validate import BadArgument, check_choice, check_float, check_int
from .layer import _points

METHODS = ("dense", "lsh", "random", "topk", "narrow")
STREAM = 31  # replicate_seeds stream of this experiment's runs
EPS = 1e-10


@dataclass(frozen=True)
class PaperConfig:
    """One experiment. ``lrs``: (method, learning rate) pairs, chosen on VALIDATION accuracy with :func:`tune_lr`
    (a method missing from it uses ``lr``). ``rebuild_first``/``rebuild_growth``: core :class:`RebuildSchedule`."""

    width: int = 1000
    active_fraction: float = 0.05
    epochs: int = 20
    batch_size: int = 16
    optimizer: str = "adagrad"
    lr: float = 0.05
    lrs: tuple[tuple[str, float], ...] = ()
    weight_decay: float = 0.0
    K: int = 6
    L: int = 50
    pool_dim: int = 8
    rebuild_first: int = 50
    rebuild_growth: float = 1.3
    seeds: int = 3

    def checked(self) -> PaperConfig:
        """Itself, or BadArgument naming the field, the value and the fix."""
        check_int(self.width, "width", low=20, high=10**6, fix="hidden units, e.g. 1000")
        check_active_fraction(self.active_fraction)
        check_int(self.epochs, "epochs", low=2, high=10_000, fix="at least 2 to see a validation curve")
        check_int(self.batch_size, "batch_size", low=1, high=10**5, fix="small, as in the paper: e.g. 16")
        check_choice(self.optimizer, "optimizer", ("adagrad", "sgd"))
        for name, v in (("lr", self.lr), *((f"lrs[{m!r}]", v) for m, v in self.lrs)):
            check_float(v, name, low=0.0, low_open=True, fix="a step size, e.g. 0.05 for Adagrad")
        for m, _ in self.lrs:
            check_choice(m, "lrs method", METHODS)
        check_float(self.weight_decay, "weight_decay", low=0.0, fix="0 for none, e.g. 1e-4")
        try:
            check_k_l(self.K, self.L)
        except ValueError as e:
            raise BadArgument(f"K={self.K!r}, L={self.L!r}: {e}") from None
        check_int(self.pool_dim, "pool_dim", low=1, fix="numbers each input is pooled to, e.g. 8")
        check_int(self.seeds, "seeds", low=2, high=1000, fix="at least 2 runs for an interval, e.g. 3")
        RebuildSchedule(self.rebuild_first, self.rebuild_growth)
        return self

    def lr_of(self, method: str) -> float:
        return dict(self.lrs).get(method, self.lr)


# Per-method Adagrad learning rates, each chosen by tune_lr on VALIDATION accuracy (grid 0.03, 0.1, 0.3, 1; 2 seeds of
# a separate stream) for its configuration. pool_dim=20, L=25 (K=6): the best validation accuracy of LSH among hash
# settings costing <= 10% of dense (tried: pool 8/L 50, pool 20/L 25, pool 20/K 4/L 40, pool 40/K 4-8/L 10-20).
DEFAULT = PaperConfig(width=1000, epochs=8, batch_size=32, pool_dim=20, L=25, seeds=3, lrs=(
    ("dense", 0.3), ("lsh", 0.1), ("random", 0.1), ("topk", 0.1), ("narrow", 0.3)))
LARGE = PaperConfig(width=1000, epochs=20, batch_size=16, pool_dim=20, L=25, seeds=5, lrs=(
    ("dense", 0.1), ("lsh", 0.3), ("random", 0.3), ("topk", 0.3), ("narrow", 0.3)))


@dataclass(frozen=True)
class Mults:
    """Hidden-layer multiplications per training example, by kind, and the dense layer's (``dense``)."""

    matmul: float
    selection: float
    rebuild: float
    dense: float

    @property
    def total(self) -> float:
        return self.matmul + self.selection + self.rebuild

    @property
    def fraction(self) -> float:
        """Total as a fraction of the dense layer's."""
        return self.total / self.dense

    def shares(self) -> str:
        d = self.dense
        return f"matmul {self.matmul / d:.1%} + selection {self.selection / d:.1%} + rebuilds {self.rebuild / d:.1%}"


def lsh_mults(n_in: int, config: PaperConfig, *, rebuilds: int, examples: int) -> Mults:
    """Hidden-layer multiplications per training example of LSH in ``config``, with ``rebuilds`` table builds
    amortized over ``examples`` training examples. One query (pooling + hashing) costs ``pool_dim * (1 + K*L)``."""
    n_in = check_int(n_in, "n_in", low=1, fix="the input width")
    examples = check_int(examples, "examples", low=1, fix="training examples seen, epochs * n_train")
    rebuilds = check_int(rebuilds, "rebuilds", low=0, fix="how many times the tables were built")
    c = config.checked()
    k, q = units_kept(c.width, c.active_fraction), c.pool_dim * (1 + c.K * c.L)
    return Mults(2 * k * n_in, q, rebuilds * c.width * q / examples, 2 * c.width * n_in)


def equal_compute_width(n_in: int, config: PaperConfig, *, rebuilds: int, examples: int) -> int:
    """Width of a dense hidden layer costing what LSH costs per example, hashing and rebuilds included:
    ``round(lsh_total / (2 * n_in))`` (a dense unit costs ``2 * n_in``: forward and weight gradient)."""
    return max(1, round(lsh_mults(n_in, config, rebuilds=rebuilds, examples=examples).total / (2 * n_in)))


@torch.no_grad()
def sparse_step_(param: torch.Tensor, state: torch.Tensor, grad_rows: torch.Tensor, rows: torch.Tensor, *,
                 lr: float, optimizer: str = "adagrad", weight_decay: float = 0.0) -> None:
    """Update ONLY ``param[rows]`` (``rows`` distinct) with ``grad_rows`` (len(rows), ...), in place. Adagrad adds
    the squared gradient to ``state[rows]`` and steps ``lr * g / (sqrt(state) + 1e-10)``; SGD steps ``lr * g``
    (state unused). Weight decay acts on the updated rows only. Every other row of ``param`` and ``state`` is left
    bit-identical."""
    g = grad_rows if weight_decay == 0 else grad_rows + weight_decay * param[rows]
    if optimizer == "adagrad":
        state.index_add_(0, rows, g * g)
        g = g / (state[rows].sqrt_() + EPS)
    param.index_add_(0, rows, g, alpha=-lr)


class _Net:
    """``n_in -> width (ReLU; a selected subset per example) -> classes``. Hidden unit j owns row j of ``p``:
    its input weights, its bias and its outgoing weights (``[w1 | b1 | w2]``), so a row-sparse step moves exactly
    the active units' weights. The output bias ``b2`` is always active."""

    def __init__(self, n_in: int, width: int, classes: int, k: int, method: str, cfg: PaperConfig, seed: int):
        g = torch_generator(seed, stream=STREAM)
        u = lambda shape, fan: (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(fan)  # noqa: E731 (nn.Linear)
        self.p = torch.cat([u((width, n_in + 1), n_in), u((width, classes), width)], 1)
        self.b2 = u((classes,), width)
        self.state, self.state_b2 = torch.zeros_like(self.p), torch.zeros_like(self.b2)
        self.n_in, self.method, self.k, self.width, self.cfg = n_in, method, k, width, cfg
        self.lr = cfg.lr_of(method)
        self.gen = torch_generator(seed, stream=STREAM + 1)
        self.index = LshIndex(n_in, width, K=cfg.K, L=cfg.L, pool_dim=cfg.pool_dim, seed=seed) \
            if method == "lsh" else None
        self.rebuild_mults, self.rebuilds = 0, 0

    def rebuild(self) -> None:
        self.rebuild_mults += self.index.rebuild(self.p[:, :self.n_in])
        self.rebuilds += 1

    def select(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, k) active units, or None for every unit (dense, narrow)."""
        if self.method == "lsh":  # most collisions first; ties broken by a random order of the units (per batch)
            rank = torch.randperm(self.width, generator=self.gen)
            return torch.topk(self.index.counts(x) * self.width + rank, self.k, dim=1, sorted=False).indices
        if self.method == "random":  # k consecutive units of a random order, from a random start: a uniform k-set
            perm = torch.randperm(self.width, generator=self.gen).repeat(2)
            start = torch.randint(0, self.width, (len(x), 1), generator=self.gen)
            return perm[start + torch.arange(self.k)]
        if self.method == "topk":
            return torch.topk(x @ self.p[:, :self.n_in].T + self.p[:, self.n_in], self.k, dim=1, sorted=False).indices
        return None

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(pre-activations, activations, the units' rows, logits); per example (B, k, ...) if ``idx`` is given."""
        n = self.n_in
        if idx is None:
            rows = self.p
            pre = torch.addmm(rows[:, n], x, rows[:, :n].T)
            a = pre.clamp_min(0)
            return pre, a, rows, a @ rows[:, n + 1:] + self.b2
        rows = self.p[idx]  # (B, k, n_in + 1 + classes): only the active units are read
        pre = torch.baddbmm(rows[:, :, n:n + 1], rows[:, :, :n], x.unsqueeze(2)).squeeze(2)
        a = pre.clamp_min(0)
        return pre, a, rows, torch.baddbmm(self.b2.unsqueeze(1), rows[:, :, n + 1:].transpose(1, 2),
                                           a.unsqueeze(2)).squeeze(2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x, self.select(x))[-1]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        idx = self.select(x)
        pre, a, rows, logits = self.forward(x, idx)
        d = torch.softmax(logits, 1)
        d[torch.arange(len(y)), y] -= 1
        d /= len(y)  # d(mean cross-entropy)/d(logits)
        n = self.n_in
        if idx is None:
            units = torch.arange(self.width)
            da = (d @ rows[:, n + 1:].T) * (pre > 0)  # (B, width)
            grad = torch.cat([da.T @ x, da.sum(0, keepdim=True).T, a.T @ d], 1)
        else:
            da = torch.bmm(rows[:, :, n + 1:], d.unsqueeze(2)).squeeze(2) * (pre > 0)  # (B, k)
            units, inv = torch.unique(idx, return_inverse=True)
            per = torch.cat([da.unsqueeze(2) * x.unsqueeze(1), da.unsqueeze(2), a.unsqueeze(2) * d.unsqueeze(1)], 2)
            grad = torch.zeros(len(units), per.shape[2]).index_add_(0, inv.reshape(-1), per.reshape(-1, per.shape[2]))
        c = self.cfg
        sparse_step_(self.p, self.state, grad, units, lr=self.lr, optimizer=c.optimizer, weight_decay=c.weight_decay)
        g = d.sum(0)
        if c.optimizer == "adagrad":
            self.state_b2 += g * g
            g = g / (self.state_b2.sqrt() + EPS)
        self.b2 -= self.lr * g

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.logits(x).argmax(1) == y).float().mean())


@dataclass
class PaperRun:
    """One (method, seed) run: ``test_acc``, ``val_curve`` (val accuracy after each epoch), ``mults`` per training
    example (hidden layer), ``rebuilds`` (table builds, LSH only), ``seconds`` (wall, training + evaluation)."""

    method: str
    seed: int
    width: int
    k: int
    lr: float
    test_acc: float
    val_curve: list[float]
    mults: Mults
    rebuilds: int
    seconds: float

    def late_gain(self) -> float:
        """Val accuracy gained over the last third of training: mean of the last 2 epochs minus the 2 epochs at 2/3
        (near 0 once converged)."""
        v, j = self.val_curve, max(2, round(2 * len(self.val_curve) / 3))
        return sum(v[-2:]) / 2 - sum(v[j - 2:j]) / 2


def _check_data(data: Splits | None) -> Splits:
    data = load("mnist1d", seed=get_seed()) if data is None else data
    if not isinstance(data, Splits):
        raise BadArgument(f"data={data!r:.60}: pass lessons_lib.data.load('mnist1d') (a Splits) or None")
    return data.to("cpu")


def train_run(method: str, data: Splits | None = None, config: PaperConfig = DEFAULT, *, seed: int = 0,
              narrow_width: int | None = None) -> PaperRun:
    """Train one network with ``method`` ("dense", "lsh", "random", "topk" or "narrow": a dense hidden layer of
    ``narrow_width`` units, default :func:`equal_compute_width`) on one CPU thread; deterministic from ``seed``."""
    method, data, cfg = check_choice(method, "method", METHODS), _check_data(data), config.checked()
    seed = check_seed(seed)
    n, n_in = len(data.x_train), data.n_features
    rebuild_at = set(RebuildSchedule(cfg.rebuild_first, cfg.rebuild_growth).steps(
        cfg.epochs * math.ceil(n / cfg.batch_size)))
    width, k = cfg.width, units_kept(cfg.width, cfg.active_fraction)
    if method == "narrow":
        width = equal_compute_width(n_in, cfg, rebuilds=len(rebuild_at), examples=cfg.epochs * n) \
            if narrow_width is None else check_int(narrow_width, "narrow_width", low=1, fix="hidden units")
    if method in ("dense", "narrow"):
        k = width
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and fair to a shared machine
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            net, order_gen = _Net(n_in, width, data.n_classes, k, method, cfg, seed), torch_generator(seed, STREAM + 2)
            curve, step = [], 0
            for _ in range(cfg.epochs):
                for b in torch.randperm(n, generator=order_gen).split(cfg.batch_size):
                    if step in rebuild_at and net.index is not None:
                        net.rebuild()
                    net.train_step(data.x_train[b], data.y_train[b])
                    step += 1
                curve.append(net.accuracy(data.x_val, data.y_val))
            test = net.accuracy(data.x_test, data.y_test)
    finally:
        torch.set_num_threads(threads)
    sel = {"lsh": cfg.pool_dim * (1 + cfg.K * cfg.L), "topk": width * n_in}.get(method, 0)
    mults = Mults(2 * k * n_in, sel, net.rebuild_mults / (cfg.epochs * n), 2 * cfg.width * n_in)
    return PaperRun(method, seed, width, k, cfg.lr_of(method), test, curve, mults, net.rebuilds,
                    time.perf_counter() - t0)


@dataclass
class PaperComparison:
    """Every method over the same ``seeds`` (run i of every method used seeds[i]: same initial weights of the
    shared rows and batch order), so gaps are paired by seed."""

    config: PaperConfig
    seeds: list[int]
    runs: list[PaperRun] = field(repr=False)
    seconds: float = 0.0

    def of(self, method: str) -> list[PaperRun]:
        return [r for s in self.seeds for r in self.runs if r.method == method and r.seed == s]

    def accuracy(self, method: str) -> Interval:
        return mean_interval([r.test_acc for r in self.of(method)])

    def gap(self, method: str, to: str = "dense") -> Interval:
        """Test accuracy of ``to`` minus ``method``, paired by seed (positive: ``method`` is worse)."""
        return paired_interval([r.test_acc for r in self.of(to)], [r.test_acc for r in self.of(method)])

    def verdict(self, method: str, margin: float = 0.01) -> Verdict:
        """"holds" if ``method`` is within ``margin`` of dense (the gap's interval below it), etc."""
        return verdict(self.gap(method), margin, "below")

    def converged(self) -> Interval:
        """Dense val accuracy gained over the last third of training (:meth:`PaperRun.late_gain`), over seeds."""
        return mean_interval([r.late_gain() for r in self.of("dense")])

    def table(self) -> str:
        """Per method: units computed, lr, test accuracy and the gap to dense (mean ± 95% half-width over the
        seeds), the hidden layer's multiplications per training example as shares of dense's, the verdict."""
        c, conv = self.config, self.converged()
        head = f"{'method':<7} {'units':>5} {'lr':>5} {'test acc':>14} {'dense − it (pts)':>16} {'matmul':>7} " \
               f"{'select':>7} {'rebuild':>7} {'total':>6}  within 1 pt of dense?"
        lines = [head, "-" * len(head)]
        for m in [m for m in METHODS if self.of(m)]:
            r, acc, g = self.of(m)[0], self.accuracy(m), self.gap(m) if m != "dense" else None
            mu, d = r.mults, r.mults.dense
            lines.append(f"{m:<7} {r.k:>5} {r.lr:>5g} {acc.mean:>7.3f} ± {acc.half_width:.3f} "
                         f"{'' if g is None else f'{100 * g.mean:+.1f} ± {100 * g.half_width:.1f}':>16} "
                         f"{mu.matmul / d:>7.1%} {mu.selection / d:>7.1%} {mu.rebuild / d:>7.1%} {mu.fraction:>6.1%}"
                         f"  {'' if g is None else self.verdict(m)}")
        lsh = self.of("lsh")
        return "\n".join(lines + [
            f"{len(self.seeds)} seeds, {c.epochs} epochs, batch {c.batch_size}, {c.optimizer} with row-sparse updates; "
            f"width {c.width}, {c.active_fraction:.0%} kept, K={c.K} L={c.L} pool={c.pool_dim}, "
            f"{lsh[0].rebuilds if lsh else 0} table builds; {self.seconds:.1f} s wall",
            "units: hidden units computed per example; matmul/select/rebuild/total: hidden-layer multiplications "
            "per training example, share of dense's",
            f"dense converged? its val accuracy gain over the last third of training: {_points(conv, 'seeds')}"])


def compare(data: Splits | None = None, config: PaperConfig = DEFAULT, *, methods: tuple[str, ...] = METHODS,
            seeds: list[int] | None = None, progress: Callable[[str], None] | None = None) -> PaperComparison:
    """Every method in ``methods`` once per seed (default ``replicate_seeds(config.seeds, STREAM)``)."""
    data, cfg = _check_data(data), config.checked()
    methods = tuple(check_choice(m, "methods[]", METHODS) for m in methods)
    if "dense" not in methods:
        raise BadArgument(f"methods={methods!r}: include 'dense', every gap is measured against it")
    seeds = replicate_seeds(cfg.seeds, stream=STREAM) if seeds is None else \
        [check_seed(v, f"seeds[{i}]") for i, v in enumerate(seeds)]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise BadArgument(f"seeds={seeds!r:.60}: at least 2 distinct run seeds (a repeated seed repeats a run)")
    t0, runs = time.perf_counter(), []
    for s in seeds:
        for m in methods:
            runs.append(train_run(m, data, cfg, seed=s))
            if progress:
                progress(f"{m} seed {s}: test {runs[-1].test_acc:.3f} in {runs[-1].seconds:.1f} s")
    return PaperComparison(cfg, seeds, runs, time.perf_counter() - t0)


def tune_lr(data: Splits | None = None, config: PaperConfig = DEFAULT, *, methods: tuple[str, ...] = METHODS,
            grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0), seeds: int = 2,
            progress: Callable[[str], None] | None = None) -> tuple[tuple[str, float], ...]:
    """For each method, the lr of ``grid`` with the best mean final VALIDATION accuracy (never test) over ``seeds``
    runs drawn from a stream of their own (not the comparison's seeds); returns ``lrs`` for :class:`PaperConfig`."""
    data = _check_data(data)
    tune_seeds = replicate_seeds(check_int(seeds, "seeds", low=1, fix="e.g. 2"), stream=STREAM + 5)
    out = []
    for m in methods:
        score = {lr: sum(train_run(m, data, replace(config, lr=lr, lrs=()), seed=s).val_curve[-1]
                         for s in tune_seeds) / len(tune_seeds) for lr in grid}
        out.append((m, max(score, key=score.get)))
        if progress:
            progress(f"{m}: val accuracy by lr {', '.join(f'{lr:g}: {v:.3f}' for lr, v in score.items())}")
    return tuple(out)


def claims(comp: PaperComparison) -> list[tuple[str, str, str, Verdict]]:
    """Rows ``(claim, source, measured, verdict)``: ``for row in claims(comp): c.add(*row)`` on a lab Claims."""
    src, f, m, conv = "seed 003 (Spring & Shrivastava)", comp.config.active_fraction, comp.of("lsh")[0].mults, \
        comp.converged()
    rows = [("In the paper's regime (row-sparse Adagrad, small batches, trained to convergence) LSH needs ≤ 10% of "
             "the multiplications, hashing and rebuilds counted", src, f"{m.fraction:.1%} of dense per training "
             f"example ({m.shares()}; a count)", HOLDS if m.fraction <= 0.10 else DOES_NOT_HOLD),
            ("…without any loss in accuracy (criterion: within 1 point of dense test accuracy)", src,
             f"dense − LSH at {f:.0%} active: {_points(comp.gap('lsh'), 'seeds')}", comp.verdict("lsh")),
            ("Control: dense has converged (val accuracy gains < 1 point over the last third of training)", "lesson",
             f"{_points(conv, 'seeds')}", verdict(conv, 0.01, "below"))]
    if comp.of("narrow"):
        d = comp.gap("narrow", to="lsh")
        rows.append((f"LSH beats a dense net of EQUAL compute ({comp.of('narrow')[0].width} hidden units: the "
                     "multiplications per example of LSH with hashing and rebuilds)", "lesson (a reviewer's first "
                     "question)", f"LSH − narrow dense: {_points(d, 'seeds')}", verdict(d, 0.0, "above")))
    if comp.of("random"):
        d = comp.gap("random", to="lsh")
        rows.append(("LSH picks better units than random ones at the same fraction", "lesson",
                     f"LSH − random: {_points(d, 'seeds')}", verdict(d, 0.0, "above")))
    if comp.of("topk"):
        rows.append(("Control: the exact top-k oracle (it computes every pre-activation to choose) at the same "
                     "fraction is within 1 point of dense", "lesson",
                     f"dense − top-k: {_points(comp.gap('topk'), 'seeds')}", comp.verdict("topk")))
    return rows

"""Lesson 09 · the SLIDE regime: a wide output layer (thousands of classes) trained with an LSH-sampled softmax.

SLIDE (Chen et al., MLSys 2020) applies seed 003's idea where it pays most: the output layer of an extreme
classification task, whose cost grows with the number of classes. Each example hashes its features (SimHash: L
tables of K bits), looks up the classes whose weight rows share its buckets (:meth:`BucketTables.members`), keeps
those met in at least ``min_count`` of its L buckets, at most ``k`` of them by collision count, and computes the
softmax on those alone (no sampling correction, as in SLIDE). While training the true label is forced in and the
slots left empty get uniform classes (SLIDE's top-k fills them with classes met in a single bucket, nearly
uniform ones). At test time the candidates are ranked by their exact logits, as SLIDE does (precision@1); the dense
arg-max of the same weights is reported too. K, L, k and ``min_count`` are chosen on the validation split with
:func:`recall_grid` (recall of the true class and precision@1 against the multiplications per query).

The task is generated here (no download): ``n_classes`` prototypes in ``dim`` dimensions, in groups of
``group_size`` that share a direction (a two-level generative label model: the classes of a group are each other's
hard negatives), examples = prototype + Gaussian noise. The features are the input of the layer (fixed, the same
for every method): the output layer is the whole cost.

Units: multiplications are scalar multiplies. Per example the dense layer costs ``n_classes * dim`` forward and as
much for its weight gradient; the sampled layer ``k * dim`` each; a K-bit SimHash of a d-vector costs ``K * d`` per
table (``K * L * d`` per query); a table rebuild hashes every class row (``n_classes * K * L * d``). Counting the
collisions, the top-k and the softmax's exponentials are not multiplications (they are memory work: see
:mod:`.crossover` for what they cost in time; here the candidates' logits are one sampled product and their
gradient one sparse product, so the work done is the work counted). The optimizer (a lazy Adam that moves only the
rows a batch touched, 9 multiplications per parameter) is counted apart.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from ..data import Splits
from ..device import pick_device
from ..lsh import BucketTables, RebuildSchedule, SimHash, check_k_l
from ..seeds import check_seed, replicate_seeds, torch_generator
from ..stats import Interval, mean_interval, paired_interval, verdict
from ..validate import BadArgument, check_choice, check_float, check_int
from .crossover import sampled_softmax, top_by_count
from .layer import _points

METHODS = ("dense", "lsh", "random", "dense-eq")  # dense-eq: dense, trained on the LSH run's multiplications
ADAM_MULTS = 9  # multiplications per parameter and Adam step (m: 2, v: 3, bias corrections 2, lr and division 2)


@dataclass(frozen=True)
class WideConfig:
    """Task, model and training sizes. ``k``: LSH (or random) candidates per example; ``K`` bits, ``L`` tables;
    tables rebuilt on ``RebuildSchedule(rebuild_first, rebuild_growth)``; ``runs`` seeds per method."""

    n_classes: int = 10_000
    dim: int = 64
    group_size: int = 20
    spread: float = 0.7  # a class's offset from its group direction (both of norm ~1)
    noise: float = 0.5  # an example's offset from its class prototype
    train_per_class: int = 3
    n_val: int = 3000
    n_test: int = 3000
    epochs: int = 2
    batch_size: int = 512
    lr: float = 0.02
    k: int = 200
    K: int = 9
    L: int = 64
    min_count: int = 2
    rebuild_first: int = 20
    rebuild_growth: float = 1.3
    runs: int = 3

    def __post_init__(self) -> None:
        for name in ("n_classes", "dim", "group_size", "train_per_class", "n_val", "n_test", "epochs", "batch_size",
                     "rebuild_first", "runs"):
            check_int(getattr(self, name), name, low=1, fix="a positive whole number")
        check_int(self.k, "k", low=1, high=self.n_classes,
                  fix=f"candidates per example, 1 to n_classes={self.n_classes}")
        for name in ("spread", "noise", "lr"):
            check_float(getattr(self, name), name, low=0.0, low_open=True, fix="a positive number")
        check_float(self.rebuild_growth, "rebuild_growth", low=1.0, fix="1 keeps the gap, 1.3 spaces rebuilds out")
        try:
            check_k_l(self.K, self.L)
        except ValueError as e:
            raise BadArgument(f"K={self.K!r}, L={self.L!r}: {e}") from None


DEFAULT = WideConfig()
LARGE = WideConfig(n_classes=50_000, dim=32, train_per_class=1, n_val=2000, n_test=3000, k=500, K=10, L=64,
                   runs=2)  # 100,000 classes do not train in minutes on 2 cores (dense and LSH ~0.3 and ~0.5 s a step)


@dataclass
class WideTask(Splits):
    """The generated data: the splits of :class:`~lessons_lib.data.Splits` (float32 features, int64 labels; every
    class has exactly ``train_per_class`` training examples), the classes' ``prototypes`` (C, d) and the ``group``
    (C,) of each class."""

    prototypes: torch.Tensor
    group: torch.Tensor

    def bayes_p1(self, split: str = "test") -> float:
        """Precision@1 of the nearest prototype (the Bayes classifier of this task: the ceiling of any model)."""
        x, y = (self.x_val, self.y_val) if check_choice(split, "split", ("val", "test")) == "val" else (self.x_test,
                                                                                                      self.y_test)
        d = -2 * x @ self.prototypes.T + (self.prototypes ** 2).sum(1)
        return float((d.argmin(1) == y).float().mean())


def make_task(cfg: WideConfig = DEFAULT, seed: int = 0) -> WideTask:
    """Generate the task deterministically from ``seed`` (group directions, prototypes, then the splits)."""
    g = torch_generator(check_seed(seed), stream=97)
    C, d = cfg.n_classes, cfg.dim
    n_groups = -(-C // cfg.group_size)
    centers = torch.nn.functional.normalize(torch.randn(n_groups, d, generator=g), dim=1)
    group = torch.arange(C) // cfg.group_size
    proto = centers[group] + cfg.spread * torch.randn(C, d, generator=g) / d ** 0.5
    proto = torch.nn.functional.normalize(proto, dim=1)

    def draw(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return proto[y] + cfg.noise * torch.randn(len(y), d, generator=g) / d ** 0.5, y

    y_tr = torch.arange(C).repeat(cfg.train_per_class)
    splits = [draw(y) for y in (y_tr, torch.randint(0, C, (cfg.n_val,), generator=g),
                                torch.randint(0, C, (cfg.n_test,), generator=g))]
    return WideTask("wide", *splits[0], *splits[1], *splits[2], n_classes=cfg.n_classes, prototypes=proto,
                    group=group)


@dataclass
class Mults:
    """Scalar multiplications of the output layer: ``layer`` (forward + weight gradient), ``hashing`` (queries),
    ``rebuild`` (tables), ``optimizer``; ``dense`` is what the dense layer costs for the same examples (forward +
    weight gradient) and ``dense_optimizer`` a dense Adam step's, for the same steps."""

    layer: int = 0
    hashing: int = 0
    rebuild: int = 0
    optimizer: int = 0
    dense: int = 0
    dense_optimizer: int = 0

    @property
    def total(self) -> int:
        return self.layer + self.hashing + self.rebuild

    @property
    def fraction(self) -> float:
        """Layer + hashing + rebuilds, over the dense layer's multiplications (the criterion of the claim)."""
        return self.total / max(self.dense, 1)

    @property
    def fraction_with_optimizer(self) -> float:
        return (self.total + self.optimizer) / max(self.dense + self.dense_optimizer, 1)


class WideOutput:
    """A linear output layer ``dim -> n_classes`` (no bias) trained by softmax over candidate classes.

    ``method``: "dense" (all classes), "lsh" (the classes that share at least ``min_count`` of the example's
    buckets in L SimHash tables of K bits, at most ``k`` of them by collision count) or "random" (``k`` uniform
    draws, duplicates merged). While training the true label is forced in (given the top count) and, if ``fill``,
    the LSH slots left empty get uniform classes. At test every rule ranks its candidates by their exact logits.
    ``mults`` counts training (the candidates actually used), ``eval_mults`` evaluation."""

    def __init__(self, n_classes: int, dim: int, *, method: str = "lsh", k: int = 300, K: int = 9, L: int = 16,
                 min_count: int = 1, fill: bool = True, schedule: RebuildSchedule | None = None, lr: float = 0.02,
                 seed: int = 0, device: torch.device | str = "cpu"):
        self.method = check_choice(method, "method", ("dense", "lsh", "random"))
        self.C, self.d = check_int(n_classes, "n_classes", low=2), check_int(dim, "dim", low=1)
        self.k = check_int(min(k, self.C) if self.method == "dense" else k, "k", low=1, high=self.C,
                           fix=f"candidates per example, 1 to n_classes={self.C}")  # dense: its test-time rules
        self.lr = check_float(lr, "lr", low=0, low_open=True, fix="Adam's step size, e.g. 0.02")
        self.device, self.seed = pick_device(device), check_seed(seed)
        self.weight = (0.01 * torch.randn(self.C, self.d, generator=torch_generator(self.seed, 98))).to(self.device)
        self.m, self.v, self.t = torch.zeros_like(self.weight), torch.zeros_like(self.weight), 0
        try:
            check_k_l(K, L)
        except ValueError as e:
            raise BadArgument(f"K={K!r}, L={L!r}: {e}") from None
        self.K, self.L = int(K), int(L)
        self.fill = bool(fill)
        self.min_count = check_int(min_count, "min_count", low=1, high=self.L, fix=f"1 to L={self.L} tables")
        self.hash = SimHash(self.d, K, L, seed=self.seed, stream=99, device=self.device)
        self.tables = BucketTables(K, L)
        self.schedule = schedule or RebuildSchedule()
        self._next_rebuild, self._gap = (0 if method == "lsh" else -1), float(self.schedule.first)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(self.seed * 7919 + 17)
        self.mults, self.eval_mults, self.steps, self.rebuilds = Mults(), Mults(), 0, 0

    def rebuild(self, counter: Mults) -> None:
        """Hash every class row into the tables (``n_classes * K * L * dim`` multiplications)."""
        self.tables.build(self.hash.codes(self.weight))
        counter.rebuild += self.C * self.K * self.L * self.d
        self.rebuilds += 1

    @torch.no_grad()
    def candidates(self, x: torch.Tensor, targets: torch.Tensor | None = None, method: str | None = None,
                   counter: Mults | None = None) -> torch.Tensor:
        """(B, k) candidate classes of each example, -1 in empty slots (``targets`` given: each forced in)."""
        method, B, dev = method or self.method, len(x), x.device
        if method == "lsh":
            if self.tables.n_items != self.C:
                self.rebuild(counter or Mults())
            query, item = self.tables.members(self.hash.codes(x))
            if targets is not None:  # L + 1 extra pairs: more than any retrieved class can collect
                query = torch.cat([query, torch.arange(B, device=dev).repeat_interleave(self.L + 1)])
                item = torch.cat([item, targets.repeat_interleave(self.L + 1)])
            if counter is not None:
                counter.hashing += B * self.K * self.L * self.d
            cand = top_by_count(query, item, B, self.C, self.k, self.gen, self.min_count)
            if targets is None or not self.fill:
                return cand
            # training: the empty slots get uniform classes (SLIDE's top-k fills them with classes met in one
            # bucket, nearly uniform ones), so LSH and random train on the same number of candidates
            draws = torch.where(cand >= 0, cand, torch.randint(0, self.C, cand.shape, generator=self.gen, device=dev))
        else:
            draws = torch.randint(0, self.C, (B, self.k), generator=self.gen, device=dev)
            if targets is not None:
                draws[:, 0] = targets
        draws = draws.sort(1).values
        return draws.masked_fill(torch.cat([torch.zeros_like(draws[:, :1], dtype=torch.bool),
                                            draws[:, 1:] == draws[:, :-1]], 1), -1)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One step of lazy Adam on the rows the batch touched; returns the loss."""
        c, B = self.mults, len(x)
        if self.steps == self._next_rebuild:  # RebuildSchedule.steps: at 0, then gaps growing by ``growth``
            self.rebuild(c)
            self._next_rebuild, self._gap = self.steps + max(1, round(self._gap)), self._gap * self.schedule.growth
        cand = None if self.method == "dense" else self.candidates(x, y, counter=c)
        loss, grad, rows = sampled_softmax(x, self.weight, cand, y)
        c.layer += 2 * self.d * (B * self.C if cand is None else int((cand >= 0).sum()))
        c.dense += 2 * B * self.d * self.C
        self.t, self.steps = self.t + 1, self.steps + 1
        b1, b2, bc1, bc2 = 0.9, 0.999, 1 - 0.9**self.t, 1 - 0.999**self.t
        if rows is None:  # every row: in place
            self.m.mul_(b1).add_(grad, alpha=1 - b1)
            self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            self.weight -= self.lr * (self.m / bc1) / ((self.v / bc2).sqrt() + 1e-8)
        else:
            m = self.m.index_select(0, rows).mul_(b1).add_(grad, alpha=1 - b1)
            v = self.v.index_select(0, rows).mul_(b2).addcmul_(grad, grad, value=1 - b2)
            self.m.index_copy_(0, rows, m)
            self.v.index_copy_(0, rows, v)
            self.weight.index_add_(0, rows, (m / bc1).div_((v / bc2).sqrt_().add_(1e-8)), alpha=-self.lr)
        c.optimizer += ADAM_MULTS * self.d * (self.C if rows is None else len(rows))
        c.dense_optimizer += ADAM_MULTS * self.C * self.d
        return float(loss)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 0) -> dict[str, float]:
        """precision@1 of the dense arg-max (``p1_dense``), of the LSH candidates ranked by their exact logits
        (``p1_lsh``, tables rebuilt from these weights), of ``k`` random classes ranked the same way
        (``p1_random``), of this method's own test-time rule (``p1``); ``recall``: the true class among the LSH
        candidates; ``cands``: mean LSH candidates; ``test_fraction``: the LSH rule's multiplications per query
        (hashing + candidates' logits) over the dense forward's, the table rebuild not counted."""
        x, y = x.to(self.device), y.to(self.device)
        chunk = chunk or max(1, min(4096, 2**24 // self.C))
        self.rebuild(self.eval_mults)
        hits = {"p1_dense": 0, "p1_lsh": 0, "p1_random": 0, "recall": 0, "cands": 0}
        for i in range(0, len(x), chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            hits["p1_dense"] += int(((xb @ self.weight.T).argmax(1) == yb).sum())
            for rule in ("lsh", "random"):
                cand = self.candidates(xb, method=rule, counter=self.eval_mults)
                logits = torch.bmm(self.weight[cand.clamp_min(0)], xb.unsqueeze(2)).squeeze(2)
                best = cand.gather(1, logits.masked_fill(cand < 0, float("-inf")).argmax(1, keepdim=True))
                hits[f"p1_{rule}"] += int((best.squeeze(1) == yb).sum())
                if rule == "lsh":
                    hits["recall"] += int((cand == yb[:, None]).any(1).sum())
                    hits["cands"] += int((cand >= 0).sum())
        out = {key: v / len(x) for key, v in hits.items()}
        out["p1"] = {"dense": out["p1_dense"], "lsh": out["p1_lsh"], "random": out["p1_random"]}[self.method]
        out["test_fraction"] = (self.K * self.L + out["cands"]) / self.C
        return out


@dataclass
class WideRun:
    """One training run: ``method``, ``seed``, the val and test metrics of :meth:`WideOutput.evaluate`, the training
    multiplications, steps, rebuilds and seconds."""

    method: str
    seed: int
    val: dict[str, float]
    test: dict[str, float]
    mults: Mults
    steps: int
    rebuilds: int
    seconds: float
    layer: WideOutput | None = field(default=None, repr=False)


def train(task: WideTask, cfg: WideConfig = DEFAULT, method: str = "lsh", *, seed: int = 0,
          max_steps: int | None = None, device: torch.device | str = "cpu", keep: bool = False,
          val: bool = True) -> WideRun:
    """Train one output layer for ``cfg.epochs`` epochs (at most ``max_steps`` steps) and measure it on the test
    split (and the validation split if ``val``)."""
    from time import perf_counter

    from ..device import synchronize

    method = check_choice(method, "method", METHODS)
    layer = WideOutput(cfg.n_classes, cfg.dim, method="dense" if method == "dense-eq" else method, k=cfg.k, K=cfg.K,
                       L=cfg.L, min_count=cfg.min_count, lr=cfg.lr, seed=seed, device=device,
                       schedule=RebuildSchedule(cfg.rebuild_first, cfg.rebuild_growth))
    x, y, g = task.x_train.to(layer.device), task.y_train.to(layer.device), torch_generator(seed, stream=96)
    budget = max_steps if max_steps is not None else 10**12
    synchronize(layer.device)
    t0 = perf_counter()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(x), generator=g).to(layer.device).split(cfg.batch_size):
            if layer.steps >= budget:
                break
            layer.train_step(x[idx], y[idx])
    synchronize(layer.device)
    seconds = perf_counter() - t0
    v = layer.evaluate(task.x_val, task.y_val) if val else {}
    return WideRun(method, seed, v, layer.evaluate(task.x_test, task.y_test), layer.mults, layer.steps,
                   layer.rebuilds, seconds, layer if keep else None)


@dataclass
class WideComparison:
    """Every method once per seed (run i of each used ``seeds[i]``: the same initial weights and batch order), on
    one generated task; methods compare in pairs, seed by seed."""

    cfg: WideConfig
    seeds: list[int]
    runs: list[WideRun]
    bayes_p1: float

    def of(self, method: str) -> list[WideRun]:
        return [r for s in self.seeds for r in self.runs if r.method == method and r.seed == s]

    def metric(self, method: str, key: str = "p1") -> Interval:
        """Mean test metric with its 95% interval over the seeds."""
        return mean_interval([r.test[key] for r in self.of(method)])

    def gap(self, a: tuple[str, str], b: tuple[str, str]) -> Interval:
        """Test metric ``a`` minus ``b`` (each (method, key)), paired by seed."""
        return paired_interval([r.test[a[1]] for r in self.of(a[0])], [r.test[b[1]] for r in self.of(b[0])])

    def table(self) -> str:
        c = self.cfg
        lines = [f"{c.n_classes:,} classes x {c.dim} features; LSH: K={c.K} bits, L={c.L} tables, classes in >= "
                 f"{c.min_count} of the query's buckets, at most k={c.k} ({c.k / c.n_classes:.1%}) by collision "
                 f"count; {c.epochs} epochs, {len(self.seeds)} seeds; nearest-prototype (Bayes) p@1 "
                 f"{self.bayes_p1:.3f}",
                 f"{'method':<9}{'p@1 own rule':>16}{'p@1 dense argmax':>18}{'p@1 LSH cand.':>16}{'recall':>8}"
                 f"{'cands':>7}{'train mults':>12}{'+optim':>8}{'test mults':>11}{'steps':>6}{'s/run':>6}"]
        for m in dict.fromkeys(r.method for r in self.runs):
            rs = self.of(m)
            cells = [f"{self.metric(m, key).mean:.3f} ± {self.metric(m, key).half_width:.3f}"
                     for key in ("p1", "p1_dense", "p1_lsh")]
            test = {"lsh": self.metric(m, "test_fraction").mean, "random": c.k / c.n_classes}.get(m, 1.0)
            mu = rs[0].mults
            lines.append(f"{m:<9}{cells[0]:>16}{cells[1]:>18}{cells[2]:>16}{self.metric(m, 'recall').mean:>8.3f}"
                         f"{self.metric(m, 'cands').mean:>7.0f}{mu.fraction:>12.1%}{mu.fraction_with_optimizer:>8.1%}"
                         f"{test:>11.1%}{rs[0].steps:>6}{statistics.median(r.seconds for r in rs):>6.1f}")
        lines.append("p@1: test precision@1, mean ± 95% half-width over seeds; own rule: dense argmax (dense), the "
                     "LSH candidates (lsh) or k random classes (random) ranked by their exact logits; recall, cands: "
                     "the true class among the LSH candidates, their mean number; train mults: layer + hashing + "
                     "rebuilds over dense (+optim: Adam counted on both sides); test mults: per query, own rule over "
                     "the dense forward")
        return "\n".join(lines)

    def claims(self) -> list[tuple[str, str, str, str]]:
        """Rows ``(claim, source, measured, verdict)`` for :meth:`lessons_lib.claims.Claims.add`."""
        src, lsh, c = "Chen et al. 2020 (SLIDE)", self.of("lsh"), self.cfg
        fr, test_fr = max(r.mults.fraction for r in lsh), max(r.test["test_fraction"] for r in lsh)
        gap = self.gap(("dense", "p1"), ("lsh", "p1"))
        rows = [("A wide output layer needs ≤ 10% of the dense multiplications with LSH (hashing and rebuilds "
                 "counted)", src, f"training {fr:.1%} of dense (layer {lsh[0].mults.layer / lsh[0].mults.dense:.1%}), "
                 f"test {test_fr:.1%} per query; K={c.K}, L={c.L}, k={c.k}; with Adam counted "
                 f"{lsh[0].mults.fraction_with_optimizer:.1%}", "holds" if max(fr, test_fr) <= 0.10 else
                 "does not hold"),
                ("…within 1 point of dense precision@1 (LSH candidates ranked by exact logits at test)", src,
                 f"dense − LSH: {_points(gap, 'paired seeds')}; "
                 f"recall of the true class among the candidates {self.metric('lsh', 'recall').mean:.3f}",
                 verdict(gap, 0.01, "below"))]
        if self.of("random"):
            d = self.gap(("lsh", "p1_dense"), ("random", "p1_dense"))
            rows.append(("LSH negatives train better than random ones (same k; dense argmax of each)", "lesson",
                         f"LSH − random: {_points(d, 'paired seeds')}",
                         verdict(d, 0.0)))
        if self.of("dense-eq"):
            d = self.gap(("lsh", "p1"), ("dense-eq", "p1"))
            rows.append(("LSH beats a dense layer trained on the same multiplications", "lesson",
                         f"LSH − dense-eq ({self.of('dense-eq')[0].steps} steps): {_points(d, 'paired seeds')}",
                         verdict(d, 0.0)))
        return rows


def compare(cfg: WideConfig = DEFAULT, methods: tuple[str, ...] = METHODS, *, seeds: list[int] | None = None,
            device: torch.device | str = "cpu", task_seed: int | None = None) -> WideComparison:
    """Every method of ``methods`` once per seed (default: ``cfg.runs`` from :func:`replicate_seeds`), measured on
    the test split. "dense-eq" is the dense layer trained for as many steps as fit in the LSH run's
    multiplications (needs "lsh" before it)."""
    for i, m in enumerate(methods):
        check_choice(m, f"methods[{i}]", METHODS)
    if "dense-eq" in methods and ("lsh" not in methods or methods.index("lsh") > methods.index("dense-eq")):
        raise BadArgument(f"methods={methods!r}: 'dense-eq' takes its budget from an 'lsh' run: list 'lsh' first")
    seeds = seeds or replicate_seeds(cfg.runs, stream=19)
    task = make_task(cfg, replicate_seeds(1, stream=20)[0] if task_seed is None else task_seed)
    runs: list[WideRun] = []
    for s in seeds:
        for m in methods:
            lsh_run = next((r for r in runs if r.method == "lsh" and r.seed == s), None)
            cap = None if m != "dense-eq" else max(1, round(lsh_run.mults.fraction * lsh_run.steps))
            runs.append(train(task, cfg, m, seed=s, max_steps=cap, device=device, val=False))
    return WideComparison(cfg, list(seeds), runs, task.bayes_p1())


def recall_grid(layer: WideOutput, x: torch.Tensor, y: torch.Tensor, Ks: tuple[int, ...] = (8, 9, 10),
                Ls: tuple[int, ...] = (32, 48, 64), ks: tuple[int, ...] = (100, 200, 400), min_count: int = 2) -> str:
    """For several K, L and k, with fresh tables over a trained layer's weights (use the validation split): recall
    of the true class among the LSH candidates, precision@1 of the candidates ranked by their exact logits, and the
    test-time multiplications per query (hashing + candidates' logits) over the dense forward: a text table."""
    x, y = x.to(layer.device), y.to(layer.device)
    lines = [f"dense argmax p@1 {float(((x @ layer.weight.T).argmax(1) == y).float().mean()):.3f}; "
             f"classes in >= {min_count} buckets",
             f"{'K':>3}{'L':>4}" + "".join(f"{f'k={k}: recall  p@1  mults':>28}" for k in ks)]
    for K in Ks:
        for L in Ls:
            probe = replace_layer(layer, K, L, min_count=min_count)
            cells = []
            for k in ks:
                probe.k = min(k, layer.C)
                r = probe.evaluate(x, y)
                cells.append(f"{r['recall']:>18.3f}{r['p1_lsh']:>6.3f}{r['test_fraction']:>6.1%}")
            lines.append(f"{K:>3}{L:>4}" + "".join(cells))
    return "\n".join(lines)


def replace_layer(layer: WideOutput, K: int, L: int, min_count: int = 1) -> WideOutput:
    """A copy of ``layer``'s weights with fresh K-bit, L-table SimHash tables (for :func:`recall_grid`)."""
    probe = WideOutput(layer.C, layer.d, method="lsh", k=layer.k, K=K, L=L, min_count=min(min_count, L),
                       seed=layer.seed, device=layer.device)
    probe.weight = layer.weight
    return probe


__all__ = ["WideConfig", "DEFAULT", "LARGE", "WideTask", "make_task", "Mults", "sampled_softmax", "top_by_count",
           "WideOutput", "WideRun", "train", "WideComparison", "compare", "recall_grid", "replace_layer"]

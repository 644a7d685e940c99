"""Lesson 09 — randomized hashing: the apparatus (experiments, sweeps, claims, panel).

Seed 003 (Spring & Shrivastava, "Scalable and Sustainable Deep Learning via Randomized Hashing"): hash
every neuron's weight vector into L tables of K-bit signed-random-projection codes (SimHash); for an
input, look up its own bucket in each table, rank the neurons by how many tables returned them, and
compute only the top fraction. The claim: about 5% of the multiplications, no loss of accuracy.

The idea from scratch (numpy, the learner's own ``simhash`` and ``active_units`` plug in) is
:mod:`lessons_lib.hashing.reference`; :mod:`.scratch` runs it. The fast PyTorch layer (:mod:`.layer`) and the
sweeps use the CSR tables of core :mod:`lessons_lib.lsh`.

What this module follows from the authors' released code (github.com/rdspring1/LSH_DeepLearning):
SimHash with K = 6 bits and L = 100 tables, hidden width 1000, inputs and weights mean-pooled to a few
dimensions before hashing, nodes ranked by collision counts ("histogram") and the top fraction kept,
inactive nodes with zero activation and zero gradient, tables rebuilt on a schedule that thins out,
a dense output layer.

Units: "multiplications" are scalar multiplications (a dot product of length d costs d). A layer
``n_in -> n_out`` costs ``n_in * n_out`` per example forward and as much again for its weight gradient.
``active_fraction`` is the fraction of hidden units KEPT (computed), in (0, 1].
"""

from __future__ import annotations

import numbers
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from ..callbacks import Callback
from ..claims import Claims
from ..data import Splits, load
from ..lsh import RebuildSchedule, check_active_fraction
from ..seeds import check_seed, get_seed, replicate_seeds, seed_everything
from ..stats import Interval, mean_interval, median_range, paired_interval, verdict
from ..training import History, evaluate, fit
from ..validate import BadArgument, check_choice, check_int

# the lesson's pieces, in one namespace for the notebook (``lab.SampledHidden``, ``lab.collision_rates``, ...)
from .analysis import Overlap as Overlap
from .analysis import PoolOverlap as PoolOverlap
from .analysis import StepTimings as StepTimings
from .analysis import UnionSizes as UnionSizes
from .analysis import overlap_vs_pool as overlap_vs_pool
from .analysis import overlap_with_topk as overlap_with_topk
from .analysis import pool_table as pool_table
from .analysis import step_timings as step_timings
from .analysis import union_fractions as union_fractions
from .analysis import union_table as union_table
from .layer import DEFAULTS, SELECTORS, _mean_half, _points, _seed, hashed_mlp, sampled_layer
from .layer import Counters as Counters
from .layer import MultCounter as MultCounter
from .layer import MultFractions as MultFractions
from .layer import SampledHidden as SampledHidden
from .scratch import CollisionRates as CollisionRates
from .scratch import ScratchRun as ScratchRun
from .scratch import _LazyAdam as _LazyAdam
from .scratch import agreeing_bits as agreeing_bits
from .scratch import collision_rates as collision_rates
from .scratch import pairs_at_angle as pairs_at_angle
from .scratch import scratch_experiment

# --- experiments -----------------------------------------------------------------------------------------
SWEEP_STREAM, SCRATCH_STREAM = 9, 10  # seeds.replicate_seeds streams of the sweep's and the scratch runs' seeds


def run_seeds(n: int = DEFAULTS.runs, stream: int = SWEEP_STREAM) -> list[int]:
    """``n`` distinct run seeds, derived from the course seed (another ``LESSONS_SEED`` gives other runs)."""
    return replicate_seeds(check_int(n, "n", low=1, high=1000, fix="the number of seeds, e.g. 5"), stream=stream)


def _seed_list(seeds: Sequence[int] | int, stream: int) -> list[int]:
    """``seeds``: how many (from :func:`run_seeds`) or a list of distinct course seeds."""
    if isinstance(seeds, numbers.Integral) or isinstance(seeds, (bool, float)):
        return run_seeds(seeds, stream)
    if isinstance(seeds, str) or not isinstance(seeds, Sequence):
        raise BadArgument(f"seeds={seeds!r:.60}: a number of runs (e.g. 5) or a list of seeds")
    out = [check_seed(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    if not out or len(set(out)) != len(out):
        raise BadArgument(f"seeds={out!r:.60}: the runs' seeds must be distinct and at least one (a repeated seed "
                          "repeats a run, it is not a new one)")
    return out


def scratch_runs(data: Splits, *, seeds: Sequence[int] | int = DEFAULTS.scratch_runs, **kw) -> list[ScratchRun]:
    """:func:`scratch_experiment` once per seed (``seeds``: a list, or how many from :func:`run_seeds`)."""
    seeds = _seed_list(seeds, SCRATCH_STREAM)
    return [scratch_experiment(data, seed=s, **kw) for s in seeds]


@dataclass
class RunResult:
    """One training run. ``mults`` are the hidden layer's counts over training (fractions of dense)."""

    method: str
    active_fraction: float
    val_acc: float
    test_acc: float
    seconds: float
    step_ms: float
    mults: MultFractions
    history: History
    model: nn.Module = field(repr=False)
    seed: int | None = None

    @property
    def layer(self) -> SampledHidden | None:
        """The model's sampled hidden layer (None for the dropout baseline)."""
        return sampled_layer(self.model)


def experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), method: str = "lsh",
               active_fraction: float = 0.05, width: int = DEFAULTS.width, epochs: int = DEFAULTS.epochs,
               lr: float = DEFAULTS.lr, batch_size: int = DEFAULTS.batch_size, K: int = DEFAULTS.K,
               L: int = DEFAULTS.L, pool_dim: int = DEFAULTS.pool_dim, rebuild_first: int = RebuildSchedule.first,
               dataset: str = DEFAULTS.dataset, seed: int | None = None, data: Splits | None = None) -> History:
    """Panel experiment: train ``hashed_mlp`` with ``method`` ("lsh", "random", "topk", "dense", "dropout")
    keeping ``active_fraction`` of the hidden units, SimHash with ``K`` bits and ``L`` tables rebuilt after
    ``rebuild_first`` steps and then ever more rarely (:class:`~lessons_lib.lsh.RebuildSchedule`). Returns the
    History; the model is in ``.config["model"]``, and ``.config["measured"]`` holds what the panel shows beside
    accuracy and ms/step: the hidden layer's multiplications in training as a share of the dense layer's (hashing
    and rebuilds counted), and how many times the tables were rebuilt."""
    method = check_choice(method, "method", SELECTORS)
    seed = seed_everything(_seed(seed))
    data = data if data is not None else load(dataset, seed=seed)
    model = hashed_mlp(data.n_features, width, data.n_classes, selector=method, active_fraction=active_fraction,
                       K=K, L=L, pool_dim=pool_dim, schedule=RebuildSchedule(first=rebuild_first), seed=seed)
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, device=device, callbacks=callbacks, seed=seed,
            config={"method": method, "active_fraction": active_fraction, "width": width})
    h.config["model"] = model
    layer = sampled_layer(model)
    if layer is None:  # dropout: the dense layer is computed in full, then masked
        h.config["measured"] = {"mults vs dense": "100%", "rebuilds": "—"}
    else:
        f, c = layer.counters.train.fractions(), layer.counters.train
        h.config["measured"] = {"mults vs dense": f"{f.total:.1%} (hashing {f.hashing:.1%})",
                                "rebuilds": str(c.rebuilds) if layer.index is not None else "—"}
    return h


def run_one(method: str, active_fraction: float, *, data: Splits, device: str = "cpu", seed: int | None = None,
            **kw) -> RunResult:
    """Train one model and measure it: val/test accuracy, time, the layer's multiplication fractions."""
    seed = get_seed() if seed is None else seed
    h = experiment(method=method, active_fraction=active_fraction, device=device, seed=seed, data=data, **kw)
    model = h.config["model"]
    dev = next(model.parameters()).device
    _, test_acc = evaluate(model, data.x_test.to(dev), data.y_test.to(dev))
    layer = sampled_layer(model)
    # dropout: the dense layer is computed in full, then masked
    mults = layer.counters.train.fractions() if layer is not None else MultFractions(1.0, 0.0, 0.0)
    return RunResult(method, active_fraction, h.val_acc[-1], test_acc, h.total_seconds, h.summary()["step_ms"], mults,
                     h, model, seed)


@dataclass
class Sweep:
    """Runs of several methods at several active fractions, repeated over ``seeds``: run i of every method used
    ``seeds[i]`` (the same initial weights and batch order for every method), on the same data split, so two
    methods compare in pairs, seed by seed."""

    rows: list[RunResult]
    seeds: list[int]

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def fractions(self, method: str) -> list[float]:
        return sorted({r.active_fraction for r in self.rows if r.method == method})

    def runs(self, method: str, active_fraction: float | None = None) -> list[RunResult]:
        """The runs of ``method`` at ``active_fraction`` (the closest one the sweep has; None: its first), one per
        seed, in the order of ``seeds``."""
        fractions = self.fractions(method)
        if not fractions:
            raise ValueError(f"no {method!r} run among {self.methods()}")
        f = fractions[0] if active_fraction is None else min(fractions, key=lambda v: abs(v - active_fraction))
        mine = {r.seed: r for r in self.rows if r.method == method and r.active_fraction == f}
        return [mine[s] for s in self.seeds if s in mine]

    def first(self, method: str, active_fraction: float | None = None) -> RunResult:
        """The run of the first seed (one model to look at)."""
        return self.runs(method, active_fraction)[0]

    def test_acc(self, method: str, active_fraction: float | None = None) -> Interval:
        """Mean test accuracy over the seeds, with its 95% interval."""
        return mean_interval([r.test_acc for r in self.runs(method, active_fraction)])

    def paired_gap(self, a: tuple[str, float | None], b: tuple[str, float | None]) -> Interval:
        """Test accuracy of ``a`` minus ``b`` (each a (method, fraction) pair), seed by seed: mean and 95% interval."""
        ra = {r.seed: r.test_acc for r in self.runs(*a)}
        rb = {r.seed: r.test_acc for r in self.runs(*b)}
        both = [s for s in self.seeds if s in ra and s in rb]
        return paired_interval([ra[s] for s in both], [rb[s] for s in both])


def fraction_sweep(fractions: Sequence[float] = DEFAULTS.fractions, methods: Sequence[str] = ("lsh", "random", "topk"),
                   *, seeds: Sequence[int] | int = DEFAULTS.runs, data: Splits | None = None, device: str = "cpu",
                   include_dense: bool = True, extra: Sequence[tuple[str, float]] = (("dropout", 0.05),),
                   **kw) -> Sweep:
    """Every method at every fraction, a dense run and the ``extra`` (method, fraction) runs, each once per seed
    (``seeds``: a list, or how many from :func:`run_seeds`): the accuracy-vs-work table of the lesson."""
    fractions = [check_active_fraction(f) for f in fractions]
    methods = [check_choice(m, "methods[]", SELECTORS) for m in methods]
    extra = [(check_choice(m, "extra method", SELECTORS), check_active_fraction(f)) for m, f in extra]
    seeds = _seed_list(seeds, SWEEP_STREAM)
    data = data if data is not None else load(kw.pop("dataset", DEFAULTS.dataset), seed=get_seed())
    plan = ([("dense", 1.0)] if include_dense else []) + [(m, f) for m in methods for f in fractions] + list(extra)
    rows = [run_one(m, f, data=data, device=device, seed=s, **kw) for s in seeds for m, f in plan]
    return Sweep(rows, seeds)


def find_run(rows: Sequence[RunResult], method: str, active_fraction: float | None = None) -> RunResult:
    """The run of ``method`` at ``active_fraction`` (the closest one; any fraction if None)."""
    mine = [r for r in rows if r.method == method]
    if not mine:
        raise ValueError(f"no {method!r} run among {sorted({r.method for r in rows})}")
    return mine[0] if active_fraction is None else min(mine, key=lambda r: abs(r.active_fraction - active_fraction))


def results_table(runs: Sweep | Sequence[RunResult]) -> str:
    """A fixed-width text table: per method and fraction, the test accuracy (mean ± 95% half-width over the
    seeds), the multiplication fractions (counts: the same for every seed) and the median time per step."""
    rows = runs.rows if isinstance(runs, Sweep) else list(runs)
    groups: dict[tuple[str, float], list[RunResult]] = {}
    for r in rows:
        groups.setdefault((r.method, r.active_fraction), []).append(r)
    head = f"{'method':<8} {'active':>7} {'runs':>5} {'test acc':>16} {'layer':>7} {'hashing':>8} {'total':>7} " \
           f"{'ms/step':>8}"
    lines = [head, "-" * len(head)]
    for (method, f), rs in groups.items():
        m, h = _mean_half([r.test_acc for r in rs])
        acc = f"{m:.3f} ± {h:.3f}" if len(rs) > 1 else f"{m:.3f}"
        mf = rs[0].mults
        lines.append(f"{method:<8} {f:>7.0%} {len(rs):>5} {acc:>16} {mf.layer:>7.1%} {mf.hashing:>8.1%} "
                     f"{mf.total:>7.1%} {statistics.median(r.step_ms for r in rs):>8.2f}")
    lines.append("test acc: mean ± 95% half-width over the runs (seeds); layer / hashing / total: multiplications of "
                 "the hidden layer during training, as a fraction of the dense layer's (hashing = queries + table "
                 "rebuilds; for topk: all pre-activations); ms/step: median")
    return "\n".join(lines)


# --- claims ----------------------------------------------------------------------------------------------
def claims(sweep: Sweep, overlaps: Sequence[Overlap], timings: StepTimings, *, scratch: Sequence[ScratchRun] = (),
           unions: tuple[Sequence[UnionSizes], Sequence[UnionSizes]] | None = None, fraction: float = 0.05,
           union_batch: int = 32, paper=None, extra: Sequence[tuple] = ()) -> Claims:
    """The lesson's claims, each measured over this run's seeds: the paper's regime (``paper``, a
    :class:`~lessons_lib.hashing.paper_regime.PaperComparison`: the seed's claims are judged there), ``extra`` rows
    ``(claim, source, measured, verdict)`` (the wide output layer, the wall-time crossover), the Adam sweep
    (accuracy gaps paired by seed), the LSH models' ``overlaps`` with the exact top-k, the ``timings`` (ratios round
    by round), the from-scratch runs, and ``unions`` = (LSH models' union sizes, random models' union sizes).
    Verdicts: :func:`lessons_lib.stats.verdict`."""
    c = Claims("09 randomized hashing")
    src = "seed 003 (Spring & Shrivastava)"
    if paper is not None:
        from .paper_regime import claims as paper_claims

        for row in paper_claims(paper):
            c.add(*row)
    for row in extra:
        c.add(*row)
    lsh_runs = sweep.runs("lsh", fraction)
    f = lsh_runs[0].active_fraction
    n = len(lsh_runs)
    totals = median_range([r.mults.total for r in lsh_runs])
    m = lsh_runs[0].mults
    same = "a count: the same in all" if totals.low == totals.high else f"median {totals.median:.1%}, range " \
        f"{totals.low:.1%}–{totals.high:.1%} over"
    adam = "" if paper is None else "With Adam and a few epochs instead (every weight row's moments move): "
    c.add(f"{adam}LSH needs ~5% of the multiplications (criterion: ≤ 10% with hashing and rebuilds counted)", src,
          f"at {f:.0%} active: layer {m.layer:.1%} + hashing {m.selection:.1%} + rebuilds {m.rebuild:.1%} = "
          f"{m.total:.1%} of dense ({same} {n} runs)", verdict(totals, 0.10, "below"))
    lsh_acc, dense_acc = sweep.test_acc("lsh", f), sweep.test_acc("dense")
    gap = sweep.paired_gap(("dense", None), ("lsh", f))
    c.add(f"{adam}…without any loss in accuracy (criterion: within 1 point of dense test accuracy)" if not adam else
          f"{adam}LSH within 1 point of dense test accuracy", src,
          f"dense − LSH: {_points(gap)}; test accuracy LSH {lsh_acc.mean:.3f}, "
          f"dense {dense_acc.mean:.3f}", verdict(gap, 0.01, "below"))
    if "random" in sweep.methods() and paper is None:
        d = sweep.paired_gap(("lsh", f), ("random", f))
        c.add("LSH picks better units than a random subset of the same size (test accuracy)", "lesson",
              f"LSH − random at {f:.0%} active: {_points(d)}",
              verdict(d, 0.0, "above"))
    if "topk" in sweep.methods() and paper is None:
        d = sweep.paired_gap(("topk", f), ("lsh", f))
        oracle = sweep.paired_gap(("dense", None), ("topk", f))
        c.add("Control: at the same fraction the exact top-k units (an oracle: it computes every pre-activation to "
              "choose) beat LSH, so the accuracy lost is LSH's pick, not the budget of units", "lesson",
              f"top-k − LSH at {f:.0%} active: {_points(d)}; dense − top-k: {_points(oracle)}",
              verdict(d, 0.0, "above"))
    iv, chance = mean_interval([o.overlap for o in overlaps]), overlaps[0].chance
    c.add("Hashing finds the units with the highest activations (criterion: overlap ≥ 2 × chance)", src,
          f"{iv.format('.1f', 100, '%')} of the picked units are in the exact top-k (chance {chance:.1%})",
          verdict(iv, 2 * chance, "above"))
    if len(scratch) >= 2:
        iv, chance = mean_interval([s.overlap for s in scratch]), scratch[0].chance
        acc = mean_interval([s.val_acc[-1] for s in scratch])
        c.add("…and so does the from-scratch version of Part 1 (same criterion)", "lesson",
              f"{iv.format('.1f', 100, '%')} of the picked units are in the exact top-k (chance {chance:.1%}), "
              f"val accuracy {acc.mean:.3f}; picked with {scratch[0].code}", verdict(iv, 2 * chance, "above"))
    if unions is not None:
        lsh_u, rnd_u = unions
        d = paired_interval([u.at(union_batch) for u in rnd_u], [u.at(union_batch) for u in lsh_u])
        c.add(f"Similar inputs share buckets: a batch's union of LSH sets is smaller than that of random sets "
              f"(batch of {union_batch})", "lesson",
              f"random − LSH: {_points(d)} of the layer's units; LSH union "
              f"{statistics.fmean(u.at(union_batch) for u in lsh_u):.1%}", verdict(d, 0.0, "above"))
    per, uni = timings.ratio("per_example"), timings.ratio("union")
    c.add("Fewer multiplications make training faster (wall time per step, LSH per example vs dense)",
          "seed 003 (implied)",
          f"LSH per-example step {per.format('.1f', unit='×')} the dense step; batch union "
          f"{uni.format('.1f', unit='×')} (ratios per interleaved round)", verdict(per, 1.0, "below"))
    c.add("Sparse updates suit asynchronous (HOGWILD) training with near-linear speedup", src,
          "not measured in this lesson (one process): see lesson 10", None)
    return c


# --- panel -----------------------------------------------------------------------------------------------
def make_panel():
    """The live panel: method, active fraction, SimHash's K and L, the first rebuild gap, epochs, width (the size
    knob for a GPU). The runs table puts each run's multiplications (hashing counted) beside its accuracy and
    ms/step."""
    import ipywidgets as w

    from ..panel import LivePanel

    knobs = {
        "method": w.Dropdown(options=list(SELECTORS), value="lsh", description="method"),
        "active_fraction": w.SelectionSlider(options=[0.02, 0.05, 0.1, 0.25, 0.5], value=0.05,
                                             description="active frac."),
        "K": w.IntSlider(value=DEFAULTS.K, min=1, max=16, description="K (bits)"),
        "L": w.IntSlider(value=DEFAULTS.L, min=1, max=200, description="L (tables)"),
        "rebuild_first": w.SelectionSlider(options=[1, 5, 10, 50, 200, 1000], value=RebuildSchedule.first,
                                           description="rebuild gap"),
        "epochs": w.IntSlider(value=4, min=1, max=60, description="epochs"),
        "width": w.Dropdown(options=[250, 1000, 4000], value=1000, description="width"),
    }
    return LivePanel(experiment, knobs, title="Which hidden units to compute?")

"""The benchmark and runner registries: benchmarks register themselves in the file that defines them
(timm-style); runners (how a benchmark is measured) register a :class:`RunnerSpec` in a light module of
their own, the one their benchmarks import for the contract type and metric list.

Workload modules under :mod:`aibench.workloads` (and any installed plugin that declares the
``aibench.workloads`` entry-point group) are imported on first use. They must not import torch at module
level, so that ``aibench list`` and ``aibench --help`` stay instant: heavy imports go inside the factory,
or into a module whose name starts with ``_`` (discovery skips those; factories import them lazily).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aibench.errors import UsageError
from aibench.spec import Param, ParamSet

KINDS = ("micro", "component", "scenario")
DIRECTIONS = ("lower", "higher")


@dataclass(frozen=True)
class MetricSpec:
    """A metric a benchmark reports. ``direction`` says which way is better; ``statistic``, ``of`` and
    ``inverse_of`` declare what it is (which statistic of which samples: see
    :mod:`aibench.results.declaration`). This list is the one place a metric is declared: the declaration is
    copied into every result's entry, and ``compare``/``gate`` read it there, never the name."""

    name: str
    unit: str
    direction: str
    help: str
    statistic: str = "value"
    of: str | None = None
    inverse_of: str | None = None

    def __post_init__(self) -> None:
        from aibench.results import declaration

        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name}: direction must be one of {DIRECTIONS}")
        try:
            declaration.check(self.statistic, self.of, self.inverse_of)
        except ValueError as exc:
            raise ValueError(f"metric {self.name}: {exc}") from None

    def declaration(self) -> dict[str, Any]:
        """The declaration fields of this metric's entries."""
        from aibench.results import declaration

        return declaration.declaration(self.statistic, self.of, self.inverse_of)


@dataclass(frozen=True)
class RunnerSpec:
    """How a benchmark is measured: declared as data, so nothing generic asks a runner's name.

    - ``contract``: "module:Class" of what the benchmark's factory returns (Op, InferenceTask, TrainingTask).
    - ``measure``: "module:function" called as ``measure(bench, params, result, opts)``; imported only when a
      benchmark of this runner is measured, so ``aibench list`` and ``info`` stay light.
    - ``capabilities``: what generic code asks (``inference``: load-generated, knees and worker-process
      scale-out; ``trains``: DistributedDataParallel ranks; ``collective``: the ranks of a launch). A benchmark
      may add its own (:attr:`Benchmark.capabilities`; ``owns-system``: its factory is a context manager
      yielding ``(system under test, batch)`` that it starts and stops itself, e.g. scenario/djinn's server).
    - ``metrics``: the metrics it can produce (benchmarks declare these or a subset).
    - ``options``: the key of its typed options in :attr:`aibench.harness.RunOptions.runner_options`, and
      ``options_type`` "module:Class" of that object (constructed with no arguments for its defaults).
      ``cli_options``: "module:attribute" of a :class:`RunnerCli`, how ``aibench run`` and ``sweep`` offer and
      build those options (one per ``options`` key; a runner sharing another's key leaves it None).
    - ``primary``: "module:function(bench, options) -> metric name": the run's primary metric when its
      options change it (LoadGen's scenario, --ttq); ``primary_from_args`` the same from a command line
      (``aibench gate``, which only sees words). ``sweepable``: numeric options a sweep may vary.
    - ``check_distributed``: "module:function(params)" refusing what DistributedDataParallel ranks cannot do.
    """

    name: str
    contract: str
    measure: str
    capabilities: frozenset[str] = frozenset()
    metrics: tuple[MetricSpec, ...] = ()
    options: str | None = None
    options_type: str | None = None
    cli_options: str | None = None
    primary: str | None = None
    primary_from_args: str | None = None
    sweepable: Mapping[str, type] = field(default_factory=dict)
    check_distributed: str | None = None
    describe: str = ""


@dataclass(frozen=True)
class RunnerCli:
    """A runner's command-line options on ``aibench run`` and ``aibench sweep`` (what
    :attr:`RunnerSpec.cli_options` names). The commands read these declarations; they name no runner.

    - ``options``: click option decorators, in ``--help`` order.
    - ``build(values, measure, given)``: the runner's typed options (its :attr:`RunnerSpec.options_type`) from
      ``values`` (its options' values by name), ``measure`` (the options every run takes:
      :class:`aibench.cli.MeasureOptions`, e.g. the seed, the results folder, the time budget) and ``given``
      (the names of the command's options given on its command line).
    - ``check(runs, options)``: refuse, before anything is measured, options that do not apply to the planned
      runs, and contradictions (UsageError).
    """

    build: Callable[[Mapping[str, Any], Any, frozenset[str]], Any]
    options: tuple[Callable[[Any], Any], ...] = ()
    check: Callable[[Sequence[Any], Any], None] | None = None


def load(dotted: str) -> Any:
    """The object named by "module:attribute" (imported now)."""
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


_RUNNERS: dict[str, RunnerSpec] = {}


def register_runner(spec: RunnerSpec) -> RunnerSpec:
    """Add a runner. Registering the same spec again (a module imported twice) is a no-op; another spec
    under a registered name is an error."""
    known = _RUNNERS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"runner {spec.name} registered twice")
    _RUNNERS[spec.name] = spec
    return spec


def runner(name: str) -> RunnerSpec:
    """The registered runner ``name`` (UsageError naming the known ones when there is none)."""
    if name not in _RUNNERS:
        discover()
    if name not in _RUNNERS:
        raise UsageError(f"runner {name!r} is not available in this aibench (known: {', '.join(sorted(_RUNNERS))})")
    return _RUNNERS[name]


# The light modules (no torch) that register the built-in runners. Workloads import them for their contracts;
# the commands import them at start-up to build their options without discovering every workload.
RUNNER_MODULES = ("aibench.measure.op", "aibench.loadgen.metrics", "aibench.measure.train_task")


def all_runners() -> list[RunnerSpec]:
    discover()
    return declared_runners()


def declared_runners() -> list[RunnerSpec]:
    """The runners registered so far and those of :data:`RUNNER_MODULES` (imported now), by name; unlike
    :func:`all_runners`, the workloads are not discovered (``aibench --help`` stays light)."""
    for module in RUNNER_MODULES:
        importlib.import_module(module)
    return sorted(_RUNNERS.values(), key=lambda r: r.name)


def runner_clis() -> dict[str, RunnerCli]:
    """The command-line declarations of the runners (:attr:`RunnerSpec.cli_options`), by their options key."""
    out: dict[str, RunnerCli] = {}
    for spec in declared_runners():
        if spec.cli_options is None or spec.options is None:
            continue
        cli = load(spec.cli_options)
        if out.setdefault(spec.options, cli) is not cli:
            raise ValueError(f"runner {spec.name}: another runner already declares the options of {spec.options!r}")
    return out


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: what it is, what it takes and reports, and how to build it.

    ``runner`` names the harness part that measures it (``kernel`` for micro benchmarks); ``factory``
    builds the workload and its signature is that runner's contract. ``sets`` maps a set name to a
    function returning a list of parameter overrides (e.g. DeepBench size lists). ``tiny`` holds parameter
    overrides small enough for the test suite. ``check`` validates combinations of parameters.
    """

    kind: str
    name: str
    description: str
    source: str
    params: ParamSet
    metrics: tuple[MetricSpec, ...]
    primary_metric: str
    runner: str
    factory: Callable[..., Any]
    sets: Mapping[str, Callable[[], list[dict[str, Any]]]] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    check: Callable[[dict[str, Any]], None] | None = None
    capabilities: frozenset[str] = frozenset()  # added to its runner's (e.g. "collective" for an all-reduce)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}")
        if self.primary_metric not in {m.name for m in self.metrics}:
            raise ValueError(f"{self.id}: primary metric {self.primary_metric!r} is not among its metrics")
        for key in self.tiny:
            self.params.lookup(key)

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def runner_spec(self) -> RunnerSpec:
        return runner(self.runner)

    def can(self, capability: str) -> bool:
        """Whether this benchmark (or its runner) declares ``capability``."""
        return capability in self.capabilities or capability in self.runner_spec.capabilities

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validated parameters: defaults overlaid with ``given``, then the benchmark's own checks."""
        values = self.params.resolve(given)
        if self.check is not None:
            self.check(values)
        return values

    def expand_set(self, set_name: str) -> list[dict[str, Any]]:
        if set_name not in self.sets:
            known = ", ".join(sorted(self.sets)) or "none"
            hint = difflib.get_close_matches(set_name, list(self.sets), n=1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            raise UsageError(f"{self.id} has no set {set_name!r}{extra}; its sets: {known}")
        return self.sets[set_name]()


_REGISTRY: dict[str, Benchmark] = {}
_ALIASES: dict[str, str] = {}
_discovered = False


def register(bench: Benchmark) -> Benchmark:
    if bench.id in _REGISTRY or bench.id in _ALIASES:
        raise ValueError(f"benchmark {bench.id} registered twice")
    _REGISTRY[bench.id] = bench
    for alias in bench.aliases:
        full = alias if "/" in alias else f"{bench.kind}/{alias}"
        _ALIASES[full] = bench.id
    return bench


def benchmark(
    *,
    kind: str,
    name: str,
    description: str,
    source: str,
    params: Iterable[Param],
    metrics: Iterable[MetricSpec],
    primary_metric: str,
    runner: str,
    **kwargs: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of :func:`register`: the decorated function is the benchmark's factory."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        register(
            Benchmark(
                kind=kind,
                name=name,
                description=description,
                source=source,
                params=ParamSet(tuple(params)),
                metrics=tuple(metrics),
                primary_metric=primary_metric,
                runner=runner,
                factory=factory,
                **kwargs,
            )
        )
        return factory

    return deco


def discover() -> None:
    """Import every workload module once (and plugins from the ``aibench.workloads`` entry points)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import aibench.workloads as pkg

    for mod in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
        if mod.name.rpartition(".")[2].startswith("_"):
            continue  # a private helper (e.g. torch model code), imported lazily by its family's factories
        importlib.import_module(mod.name)
    from importlib.metadata import entry_points

    for ep in entry_points(group="aibench.workloads"):
        ep.load()


def all_benchmarks() -> list[Benchmark]:
    discover()
    return sorted(_REGISTRY.values(), key=lambda b: (KINDS.index(b.kind), b.name))


def find(pattern: str | None = None, kind: str | None = None) -> list[Benchmark]:
    """Benchmarks whose id (``kind/name``) matches the shell-style ``pattern``; a pattern without ``/``
    is matched against the name alone."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    out = []
    for b in all_benchmarks():
        if kind and b.kind != kind:
            continue
        if pattern:
            target = b.id if "/" in pattern else b.name
            if not fnmatch.fnmatchcase(target, pattern):
                continue
        out.append(b)
    return out


def get(ref: str) -> Benchmark:
    """Look up ``kind/name`` (or an alias), answering an unknown name with the closest matches."""
    discover()
    ref = ref.strip()
    if ref in _REGISTRY:
        return _REGISTRY[ref]
    if ref in _ALIASES:
        return _REGISTRY[_ALIASES[ref]]
    kind, _, name = ref.partition("/")
    if not name:  # a bare name or alias: unique across kinds
        ids = {b.id for b in _REGISTRY.values() if b.name == ref}
        ids |= {target for alias, target in _ALIASES.items() if alias.partition("/")[2] == ref}
        if len(ids) == 1:
            return _REGISTRY[ids.pop()]
    elif kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r} in {ref!r}; kinds are {', '.join(KINDS)}")
    candidates = list(_REGISTRY) + list(_ALIASES)
    names = {b.name: b.id for b in _REGISTRY.values()}
    close = difflib.get_close_matches(ref, candidates, n=3, cutoff=0.5)
    close += [names[n] for n in difflib.get_close_matches(name or ref, list(names), n=3, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:3]
    hint = f"; did you mean {', '.join(close)}?" if close else "; see 'aibench list'"
    raise UsageError(f"unknown benchmark {ref!r}{hint}")


def split_ref(args: list[str]) -> tuple[str, list[str]]:
    """Accept ``KIND NAME ...`` or ``KIND/NAME ...``; return the id and the remaining arguments."""
    if not args:
        raise UsageError("name a benchmark: KIND NAME or KIND/NAME (see 'aibench list')")
    first = args[0]
    if "/" in first:
        return first, args[1:]
    if first in KINDS:
        if len(args) < 2 or args[1].startswith("-"):
            raise UsageError(f"name a {first} benchmark after {first!r} (see 'aibench list --kind {first}')")
        return f"{first}/{args[1]}", args[2:]
    return first, args[1:]

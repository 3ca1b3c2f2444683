"""scenario/ecommerce: AIBench's e-commerce search path under closed-loop users (or any LoadGen scenario).

Light on purpose (listing benchmarks imports it): the store, the path and the system are imported when the
benchmark runs (:mod:`aibench.ecommerce.load`). Build a store first with ``aibench scenario ecommerce
generate`` and ``train``; docs/ecommerce.md says what is reported.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aibench.loadgen.metrics import COMPONENT_METRICS
from aibench.registry import MetricSpec, benchmark
from aibench.spec import Param

QUALITY = (  # metric, path in the training record's quality report, help
    ("classifier_accuracy", ("classifier", "trained"), "the category classifier's held-out accuracy against the "
     "true intents (from the store's training record)"),
    ("classifier_accuracy_baseline", ("classifier", "baseline_majority"), "the majority category's accuracy"),
    ("preference_category_accuracy", ("preference", "category_accuracy"), "the preference network's held-out "
     "category accuracy of clicks"),
    ("ranker_ndcg10", ("ranker", "trained"), "the ranker's held-out NDCG@10"),
    ("ranker_ndcg10_baseline", ("ranker", "baseline_popularity"), "NDCG@10 of ordering by popularity "
     "(rating sum), the ranker's baseline"),
)
DEPLOYMENTS = ("in-process", "services")
ECOMMERCE_METRICS = (
    # the in-process stage shares do not apply: the path's modules are in parts.module
    *(m for m in COMPONENT_METRICS if not m.of or not m.of.startswith("parts.stage.")),
    # counts and quality figures are plain values (as their names read in a version-1 file); the module and
    # AI/non-AI distributions are in parts.module and parts.stage, each with its own summary
    MetricSpec("queries_ok", "queries", "higher", "measured queries answered with a page"),
    MetricSpec("queries_no_hits", "queries", "lower", "measured queries the searcher found nothing for"),
    MetricSpec("queries_failed", "queries", "lower", "measured queries a module failed (method.ecommerce."
               "failed_by_module says which)"),
    MetricSpec("share_ai", "fraction", "lower", "the AI parts' share of the path's summed time (the "
               "recommender's two models + the ranker's model)", "ratio", "parts.stage.ai"),
    MetricSpec("share_non_ai", "fraction", "lower", "the non-AI parts' share of the path's summed time",
               "ratio", "parts.stage.non_ai"),
    *(MetricSpec(name, "score", "higher", help) for name, _, help in QUALITY),
    # the query generator's and harness's CPU, the streaming updates (docs/ecommerce.md)
    MetricSpec("harness_cpu_share", "fraction", "lower", "the share of the process's CPU spent outside the path's "
               "modules and the updater (the query generator, the harness, the hand-off to the workers)"),
    MetricSpec("path_cpu_ms", "ms", "lower", "the path's CPU time per query (the serving thread's)", "mean"),
    MetricSpec("updates", "updates", "higher", "streaming updates (--update-every-s) that started in the "
               "measured window", "count"),
    MetricSpec("ranker_ndcg10_streamed", "score", "higher", "NDCG@10 of the last ranker a streaming update "
               "swapped in, on the updater's held-out lists"),
)



@benchmark(
    kind="scenario", name="ecommerce",
    description="AIBench's e-commerce search (planner, recommender, searcher, ranker, fetch) in process or as "
                "services (--deploy services: communication per hop), "
                "under closed-loop users (--users, --think-time-ms) or LoadGen: every module's latency "
                "distribution, the AI vs non-AI share, queries without hits and failed, the models' quality",
    source="AIBench (Gao et al., 2019), §4.1 and §6.1",
    params=[
        Param("store", str, "shop", "the store folder (aibench scenario ecommerce generate --out DIR; then train)"),
        Param("think", str, "exponential", "closed-loop users' think time: exponential (a Poisson process, as "
              "the paper) or constant (AIBench's JMeter plan), mean --think-time-ms",
              choices=("exponential", "constant")),
        Param("warmup_s", float, 10.0, "closed-loop users: seconds of load before the measured window (the "
              "paper: 30); excluded from every figure", unit="s", minimum=0.0, maximum=3600.0),
        Param("queries", int, 0, "closed-loop users: stop after this many measured requests (the paper: "
              "20000); 0: after --duration-s", minimum=0, maximum=100_000_000),
        Param("workers", int, 2, "threads serving the path (each with its own SQLite connection)",
              minimum=1, maximum=1024),
        Param("samples", int, 2000, "distinct (user, query) pairs drawn from the store's sessions, seeded; "
              "each request picks one at random", minimum=1, maximum=10_000_000),
        Param("window", int, 2000, "candidates the searcher collects for the ranker (AIBench: 2000)",
              minimum=1, maximum=1_000_000),
        # the deployment (docs/ecommerce.md "As services")
        Param("deploy", str, "in-process", "in-process: the path in this process; services: each module a "
              "process behind HTTP and the models behind 'aibench serve' (started here unless --addresses), "
              "with each hop's communication time as a part", choices=DEPLOYMENTS),
        Param("addresses", str, "", "--deploy services: modules placed elsewhere, NAME=http://HOST:PORT,... "
              "(NAME: planner alone, or any of recommender, searcher, ranker, fetch, models = the model server); "
              "the rest are started here on free loopback ports"),
        Param("hop_timeout_s", float, 10.0, "--deploy services: the planner's timeout per call to a module (the "
              "recommender's and ranker's calls to the model server get a third of it, the driver's call to the "
              "planner four times it + 1 s); a module that does not answer in time fails the query, named",
              unit="s", minimum=0.01, maximum=3600.0),
        # streaming-like updates during the run (issue 17 item 2) and the model-size study (item 5)
        Param("update_every_s", float, 0.0, "streaming updates: S seconds after the run starts and after each "
              "update ends (warm-up included), fine-tune a copy of the ranker on the store's next sessions and "
              "swap it in atomically; 0: none",
              unit="s", minimum=0.0, maximum=86400.0),
        Param("update_sessions", int, 2000, "streaming updates: sessions of the store's log each update reads",
              minimum=1, maximum=100_000_000),
        Param("update_steps", int, 20, "streaming updates: optimizer steps per update", minimum=1, maximum=100_000),
        Param("pref_hidden", int, 0, "the model-size study: serve the set whose preference network has this "
              "hidden width (models/ if it has it, else models-pref<N>/ from 'train --pref-hidden N "
              "--size-study'); 0: the store's models/", minimum=0, maximum=65536),
    ],
    metrics=ECOMMERCE_METRICS,
    primary_metric="samples_per_s",
    runner="loadgen",
    capabilities=frozenset({"owns-system"}),
    tiny={"samples": 20, "warmup_s": 0.0, "queries": 20, "window": 50, "workers": 1},
)
def ecommerce(params: dict[str, Any], result: Any) -> contextlib.AbstractContextManager[tuple[Any, int]]:
    """A context manager yielding (the path as a system under test, batch 1); on leaving, the measured
    window's per-module figures are recorded into ``result``."""
    if params.get("deploy") == "services":
        from aibench.ecommerce.deploy import services_system  # starts and stops the module processes

        if params.get("update_every_s") or params.get("pref_hidden"):
            from aibench.errors import UsageError

            # the model server loads the store's models/ once: swaps and size-study sets reach only the
            # in-process path, and a run must not claim what it did not do
            raise UsageError("--update-every-s and --pref-hidden apply to --deploy in-process only")

        return services_system(params, result)
    if params.get("addresses"):
        from aibench.errors import UsageError

        raise UsageError("--addresses places modules of --deploy services; this run is --deploy in-process")
    from aibench.ecommerce.load import shop_system  # the store, torch and the path: only when it runs

    return shop_system(params, result)

from __future__ import annotations

import pytest

from aibench import registry
from aibench.errors import UsageError

AIBENCH_MICRO = {"conv", "fc", "relu", "sigmoid", "tanh", "maxpool", "avgpool", "cosinenorm", "batchnorm",
                 "dropout", "mul", "softmax"}


def test_the_twelve_aibench_micro_benchmarks_and_gemm_are_registered() -> None:
    names = {b.name for b in registry.find(kind="micro")}
    assert AIBENCH_MICRO | {"gemm"} <= names


def test_every_benchmark_is_well_formed() -> None:
    for b in registry.all_benchmarks():
        assert b.description and b.source, b.id
        assert b.primary_metric in {m.name for m in b.metrics}
        for p in b.params:
            assert p.help, f"{b.id} {p.name} has no help"
        b.resolve({})  # defaults are valid
        b.resolve(dict(b.tiny))  # test sizes are valid


def test_wildcards_and_kind_filter() -> None:
    assert {b.name for b in registry.find("micro/*pool*")} == {"maxpool", "avgpool"}
    assert {b.name for b in registry.find("*pool")} == {"maxpool", "avgpool"}
    assert registry.find("nothing*") == []
    with pytest.raises(UsageError, match="unknown kind"):
        registry.find(kind="macro")


def test_lookup_forms_and_aliases() -> None:
    assert registry.get("micro/gemm").name == "gemm"
    assert registry.get("gemm").id == "micro/gemm"
    assert registry.get("micro/matmul").id == "micro/gemm"
    assert registry.get("matmul").id == "micro/gemm"
    assert registry.split_ref(["micro", "gemm", "--m", "1"]) == ("micro/gemm", ["--m", "1"])
    assert registry.split_ref(["micro/gemm"]) == ("micro/gemm", [])


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UsageError, match="did you mean micro/gemm"):
        registry.get("micro/gemn")
    with pytest.raises(UsageError, match=r"did you mean.*micro/maxpool"):
        registry.get("micro/maxpol")
    with pytest.raises(UsageError, match="unknown kind"):
        registry.get("mikro/gemm")


def test_deepbench_sets_expand_and_validate() -> None:
    from aibench.harness import plan

    for ref in ("micro/gemm", "micro/conv"):
        b = registry.get(ref)
        assert set(b.sets) == {"deepbench-inference-server", "deepbench-inference-device", "deepbench-training"}
        for name in b.sets:
            runs = plan(b, {}, name)
            assert len(runs) > 5
            assert runs[0].context == {"set": name, "set_index": 0, "set_size": len(runs)}


def test_set_rows_cannot_be_overridden_silently() -> None:
    from aibench.harness import plan

    with pytest.raises(UsageError, match="already sets --m"):
        plan(registry.get("micro/gemm"), {"m": "4"}, "deepbench-training")
    with pytest.raises(UsageError, match="has no set"):
        plan(registry.get("micro/gemm"), {}, "deepbench-nope")


def test_runners_declare_what_generic_code_asks() -> None:
    """Sweep and gate ask capabilities and hooks of the runner spec, never a runner's or benchmark's name."""
    from aibench.registry import all_runners, get

    names = {r.name for r in all_runners()}
    assert {"kernel", "loadgen", "training"} <= names
    assert get("micro/allreduce").can("collective") and not get("micro/gemm").can("collective")
    assert get("component/imc").can("inference") and not get("component/imc").can("trains")
    lenet = get("component/fathom-lenet")
    assert lenet.can("trains") and lenet.runner_spec.check_distributed is not None
    for spec in all_runners():
        assert ":" in spec.measure and ":" in spec.contract and spec.metrics
    from aibench.harness import RunOptions, primary_metric
    from aibench.loadgen.settings import LoadgenOptions

    imc = get("component/imc")
    single = RunOptions().with_options(loadgen=LoadgenOptions(scenario="single-stream"))
    assert primary_metric(imc, {}, RunOptions()) == "samples_per_s"
    assert primary_metric(imc, {}, single) == "latency_early_stopping"
    assert primary_metric(lenet, {"ttq": True}, RunOptions()) == "time_to_target"
    assert primary_metric(get("micro/gemm"), {}, RunOptions()) == get("micro/gemm").primary_metric

"""All-reduce over torch.distributed (DeepBench's all-reduce sizes): latency and bus bandwidth.

Each rank holds ``count`` elements and the op is one in-place ``all_reduce`` (sum) on all ranks at once. The
ranks are processes: spawned here (``--ranks N``, gloo on CPU tensors, NCCL on CUDA tensors, rank r on
cuda:first+r), or the ranks of a torchrun launch (``aibench sweep gpus micro/allreduce``, one machine or
several). The kernel timer times blocks of calls on rank 0 after a barrier (aibench.measure.collective).

Figures, as nccl-tests defines them: ``time_median`` is the latency of one all-reduce; ``algbw`` = S / t with
S = count × element size (``gbps`` is the same figure); ``busbw`` = algbw × 2(n-1)/n, the per-link traffic of
a ring all-reduce, comparable across rank counts.
"""

from __future__ import annotations

from typing import Any

from aibench.measure.kernel import KERNEL_METRICS, TIME, Op
from aibench.registry import MetricSpec, benchmark
from aibench.results.schema import metric
from aibench.spec import Param
from aibench.workloads.micro.passes import DTYPE_BYTES, device_params, micro_kwargs, require_memory

BUSBW_NOTE = "busbw = algbw × 2(n-1)/n (nccl-tests' all-reduce bus bandwidth: the traffic per link of a ring)"
ALGBW_NOTE = "algbw = S / t, S = count × element size (the bytes of one rank's buffer; nccl-tests)"


def _row(row: dict[str, str]) -> dict[str, Any]:
    return {"count": int(row["num_floats"])}


def _deepbench_all_reduce() -> list[dict[str, Any]]:
    from aibench.workloads.micro.passes import deepbench_rows

    return deepbench_rows("all_reduce.csv", _row)()


@benchmark(
    name="allreduce",
    description="All-reduce (sum, in place) of count elements across ranks over torch.distributed",
    source="DeepBench all-reduce (sizes); nccl-tests (bandwidth definitions)",
    params=[
        Param("count", int, 100_000, "elements per rank (DeepBench's num_floats)", minimum=1, maximum=1 << 32),
        Param("ranks", int, 2, "processes taking part (under torchrun: the launch's world size)", minimum=1,
              maximum=1024),
        Param("backend", str, "auto", "auto: NCCL for CUDA tensors, gloo for CPU ones", choices=("auto", "gloo",
                                                                                               "nccl")),
        *device_params(),
    ],
    metrics=(*KERNEL_METRICS,
             MetricSpec("algbw", "GB/s", "higher", ALGBW_NOTE, "rate", TIME, "median"),
             MetricSpec("busbw", "GB/s", "higher", BUSBW_NOTE, "rate", TIME, "median")),
    sets={"deepbench": _deepbench_all_reduce},
    tiny={"count": 1024, "ranks": 2},
    aliases=("all-reduce", "all_reduce"),
    **{k: v for k, v in micro_kwargs().items() if k != "metrics"},
)
def allreduce(params: dict[str, Any], device: Any, dtype: Any) -> Op:
    from aibench.errors import UnavailableError
    from aibench.measure import collective as coll

    count, dtype_name = params["count"], params["dtype"]
    s = DTYPE_BYTES[dtype_name]
    nbytes = count * s
    backend = coll.backend_for(device.type, params["backend"])
    if coll.in_process_group():
        rank, world = coll.group_rank()
        if rank != 0:
            raise RuntimeError("only rank 0 measures; the other ranks follow (aibench.sweep.worker)")
        spec = coll.RankSpec(ranks=world, backend=backend, device_type=device.type, first_cuda=0, count=count,
                             dtype=dtype_name)
        require_memory(2 * nbytes, device)
        ranks: Any = coll.ProcessGroupRanks(spec, coll.local_rank())
        where = f"{coll.launcher()} process group"
    else:
        n = params["ranks"]
        first = (device.index or 0) if device.type == "cuda" else 0
        if device.type == "cuda" and first + n > coll.visible_cuda():
            raise UnavailableError(f"--ranks {n} on cuda:{first}.. needs {first + n} GPUs; this machine has "
                                   f"{coll.visible_cuda()}")
        spec = coll.RankSpec(ranks=n, backend=backend, device_type=device.type, first_cuda=first, count=count,
                             dtype=dtype_name)
        require_memory(3 * nbytes * (n if device.type == "cpu" else 1), device)
        ranks = coll.LocalRanks(spec).start()
        where = "processes spawned on this machine"
    n = spec.ranks

    def extra(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
        med = summary["median"]
        alg = nbytes / med / 1e9 if med > 0 else None
        work = {"work": nbytes / 1e9} if alg else {}
        out = {"algbw": metric(alg, "GB/s", "higher", None if alg else "median time is zero", note=ALGBW_NOTE,
                               **work)}
        if alg is None:
            out["busbw"] = metric(None, "GB/s", "higher", unavailable="median time is zero")
        elif n < 2:
            out["busbw"] = metric(None, "GB/s", "higher", unavailable="one rank moves nothing between ranks")
        else:
            out["busbw"] = metric(alg * coll.busbw_factor(n), "GB/s", "higher", note=BUSBW_NOTE,
                                  work=nbytes * coll.busbw_factor(n) / 1e9)
        return out

    return Op(
        fn=lambda: ranks.time_block(None, 1), flops=None, bytes=float(nbytes),
        flops_note="not defined: an all-reduce moves data (see algbw and busbw)",
        bytes_note="S = count × element size: one rank's buffer, so GB/s here is nccl-tests' algbw",
        shapes={"buffer": [count]}, block_timer=ranks, extra_metrics=extra, close=ranks.close,
        context={"collective": {"op": "all_reduce", "reduce_op": "sum", "ranks": n, "backend": backend,
                                "ranks_from": where, "bytes_per_rank": nbytes,
                                "devices": [spec.device_for(r) for r in range(n)] if where.startswith("proc")
                                else f"{device.type} (LOCAL_RANK per node)",
                                "busbw_factor": coll.busbw_factor(n), "busbw_formula": BUSBW_NOTE,
                                "algbw_formula": ALGBW_NOTE}})

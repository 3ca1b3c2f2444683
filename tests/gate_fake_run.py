"""A stand-in for ``<python> -m aibench -q run BENCH ARGS --json --out DIR`` for the gate tests.

Used as a gate side's command prefix: ``[sys.executable, gate_fake_run.py, --value 1e-3, --noise 0.01, …]``;
the gate appends ``-m aibench -q run …``. It writes one real result file (through aibench's own schema and
store) whose metric is ``value × exp(N(0, noise))``, the noise seeded by the output folder's name, so a gate
over these processes is fast and deterministic. Options before ``-m`` choose how it behaves.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path


def main() -> int:
    argv = sys.argv[1:]
    cut = argv.index("-m")
    own, rest = argv[:cut], argv[cut + 2:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--value", type=float, default=1e-3)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--metric", default="time_median")
    ap.add_argument("--unit", default="s")
    ap.add_argument("--direction", default="lower")
    ap.add_argument("--statistic", default="median", help="what the metric declares it is")
    ap.add_argument("--v1", action="store_true", help="write a result of schema version 1 (an aibench before "
                    "version 2, which declared nothing), as an older baseline tree does")
    ap.add_argument("--hash", default="0123456789abcdef")
    ap.add_argument("--fail", action="store_true", help="crash like a broken candidate")
    ap.add_argument("--refuse", action="store_true", help="refuse the arguments (as for an unknown parameter)")
    ap.add_argument("--unavailable", action="store_true", help="report the metric as unavailable")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--pidfile", help="append this process's id here")
    ap.add_argument("--paced", action="store_true", help="take turns with the other side (aibench.measure.pace)")
    ap.add_argument("--turns", type=int, default=3, help="turns after which a paced fake wants to stop")
    ap.add_argument("--die-in-turn", action="store_true", help="crash in the first paced turn")
    ap.add_argument("--turn-log", help="append 'PID warm|turn' here for every turn granted")
    o = ap.parse_args(own)
    if "--dry-run" in rest:
        if o.refuse:
            print("aibench: error: unknown parameter --bogus for micro/fake", file=sys.stderr)
            return 2
        print("micro/fake --m=1")
        return 0
    if o.pidfile:
        with open(o.pidfile, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    if o.sleep:
        time.sleep(o.sleep)
    if o.fail:
        print("Traceback (most recent call last):\nRuntimeError: the candidate exploded", file=sys.stderr)
        return 70
    if o.paced:
        _take_turns(o)
    from aibench.results.schema import Result, metric
    from aibench.results.store import write_result

    out = Path(rest[rest.index("--out") + 1])
    rng = random.Random(f"{out.name}-{o.value}")
    value = o.value * math.exp(rng.gauss(0.0, o.noise)) if o.noise else o.value
    decl = {"statistic": o.statistic, "of": None}
    entry = (metric(None, o.unit, o.direction, unavailable="no counter on this machine", **decl) if o.unavailable
             else metric(value, o.unit, o.direction, **decl))
    result = Result(benchmark={"id": "micro/fake", "kind": "micro", "name": "fake", "source": "tests",
                               "description": "a fake benchmark"},
                    params={"m": 1}, config_hash=o.hash, primary_metric=o.metric, metrics={o.metric: entry},
                    finished_at=None, duration_s=0.0)
    if o.v1:
        import json

        from aibench.results.store import result_filename, write_text_atomic

        doc = result.to_dict()
        doc.update(schema_version=1, system=doc.pop("machine"), scenario=doc.pop("load_scenario"))
        del doc["parts"]
        for e in doc["metrics"].values():
            for key in ("statistic", "of", "inverse_of"):
                e.pop(key, None)
        write_text_atomic(out / result_filename(result), json.dumps(doc, indent=2))
        print(json.dumps(doc))
        return 0
    write_result(result, out)
    print(result.to_json())
    return 0


def _take_turns(o: argparse.Namespace) -> None:
    """Speak the child's side of the gate's lockstep protocol, as a kernel benchmark does."""
    from aibench.measure.pace import current

    pacer = current()
    if pacer is None:
        return
    order = pacer.hello()
    if order is None:  # solo
        return
    pacer.ready()
    done = 0
    while True:
        what = pacer.next()
        if what == "stop":
            return
        if o.turn_log:
            with open(o.turn_log, "a") as fh:
                fh.write(f"{os.getpid()} {what} {order.cpu}\n")
        if o.die_in_turn:
            print("Traceback (most recent call last):\nRuntimeError: died in its turn", file=sys.stderr)
            os._exit(70)
        if what == "turn":
            done += 1
        pacer.done(done >= o.turns)


if __name__ == "__main__":
    sys.exit(main())

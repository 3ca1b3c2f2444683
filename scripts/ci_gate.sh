#!/usr/bin/env bash
# The CI performance gate between two git revisions: build a baseline and a candidate environment, then run
# `aibench gate` on them (interleaved rounds of fresh processes, in this one job).
#
#   scripts/ci_gate.sh BASE_REV CAND_REV [aibench gate options and benchmarks...]
#
#   scripts/ci_gate.sh origin/main HEAD --machine shared \
#       -b 'micro/gemm --m 256 --n 256 --k 256 --max-time 0.5' --json gate.json --markdown gate.md
#
# How the environments are built (AIBENCH_GATE_MODE):
#   shared (the default when both revisions declare the same dependencies): ONE virtual environment with the
#          dependencies (torch alone is ~4.7 GB), and each revision as a source tree (`git worktree add`)
#          used through a command prefix: --baseline 'env PYTHONPATH=<base tree> <venv>/bin/python'.
#   full   (the default when the dependency lists differ): one virtual environment per revision, each with
#          its revision installed (`pip install <tree>`): --baseline-python <venv-base>/bin/python.
#   auto   (default): shared or full as above.
# Other settings:
#   AIBENCH_GATE_WORK    work folder (default: .aibench-gate in the repository; trees and venvs live there)
#   AIBENCH_GATE_PYTHON  interpreter that creates the venvs (default: python3; 3.11 or newer)
#   AIBENCH_GATE_VENV    an existing venv that already has the dependencies (e.g. the job's .venv): used as
#                        the shared venv instead of building one (shared mode only)
#   AIBENCH_GATE_KEEP=1  keep the worktrees afterwards (they are removed by default)
#
# Exit status: that of `aibench gate` — 0 pass (or improved), 10 regression, 11 inconclusive (0 with
# --inconclusive pass), 12 error, 2 bad usage, 130 interrupted — or 3 when the environments cannot be built.
set -euo pipefail

if [[ $# -lt 2 || "$1" == -h || "$1" == --help ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    [[ $# -lt 2 ]] && exit 2 || exit 0
fi
BASE_REV=$1
CAND_REV=$2
shift 2

REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
WORK=${AIBENCH_GATE_WORK:-$REPO/.aibench-gate}
PY=${AIBENCH_GATE_PYTHON:-python3}
MODE=${AIBENCH_GATE_MODE:-auto}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

die() { echo "ci_gate: $*" >&2; exit 3; }
note() { echo "ci_gate: $*" >&2; }

base_sha=$(git -C "$REPO" rev-parse --verify "$BASE_REV^{commit}") || die "unknown revision $BASE_REV"
cand_sha=$(git -C "$REPO" rev-parse --verify "$CAND_REV^{commit}") || die "unknown revision $CAND_REV"

# Source trees of the two revisions (detached worktrees: `aibench` records their commit in every result).
trees=()
cleanup() {
    if [[ "${AIBENCH_GATE_KEEP:-0}" != 1 ]]; then
        for t in "${trees[@]}"; do git -C "$REPO" worktree remove --force "$t" 2>/dev/null || true; done
    fi
}
trap cleanup EXIT
for side in base cand; do
    sha=$base_sha; [[ $side == cand ]] && sha=$cand_sha
    tree=$WORK/tree-$side
    git -C "$REPO" worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
    git -C "$REPO" worktree add --detach --quiet "$tree" "$sha" || die "cannot check out $sha"
    trees+=("$tree")
done
note "baseline  $BASE_REV = ${base_sha:0:12}"
note "candidate $CAND_REV = ${cand_sha:0:12}"

deps() {  # the [project] dependencies a tree declares, one per line, sorted
    "$PY" - "$1/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as fh:
    print("\n".join(sorted(tomllib.load(fh)["project"].get("dependencies", []))))
EOF
}
deps "$WORK/tree-base" > "$WORK/deps-base.txt" || die "cannot read the baseline's pyproject.toml"
deps "$WORK/tree-cand" > "$WORK/deps-cand.txt" || die "cannot read the candidate's pyproject.toml"
if [[ $MODE == auto ]]; then
    if cmp -s "$WORK/deps-base.txt" "$WORK/deps-cand.txt"; then MODE=shared; else MODE=full; fi
fi
[[ $MODE == shared || $MODE == full ]] || die "AIBENCH_GATE_MODE must be auto, shared or full (not $MODE)"

venv() {  # venv DIR [pip install arguments...]: create once, install what is asked
    local dir=$1; shift
    if [[ ! -x $dir/bin/python ]]; then
        "$PY" -m venv "$dir" || die "cannot create a virtual environment in $dir"
    fi
    "$dir/bin/python" -m pip install --quiet "$@" || die "pip install failed in $dir"
}

if [[ $MODE == shared ]]; then
    if [[ -n "${AIBENCH_GATE_VENV:-}" ]]; then
        VENV=$(cd "$AIBENCH_GATE_VENV" && pwd)
        note "shared mode: dependencies from $VENV"
    else
        VENV=$WORK/venv
        note "shared mode: one venv with the dependencies ($VENV)"
        venv "$VENV" -r "$WORK/deps-cand.txt"
    fi
    # Each side imports its own tree first (the gate runs children with PYTHONSAFEPATH=1, so the working
    # directory never shadows it).
    set -- --baseline "env PYTHONPATH=$WORK/tree-base $VENV/bin/python" --baseline-label "$BASE_REV (${base_sha:0:8})" \
           --candidate "env PYTHONPATH=$WORK/tree-cand $VENV/bin/python" --candidate-label "$CAND_REV (${cand_sha:0:8})" \
           "$@"
    GATE_PY=$VENV/bin/python
    GATE_PATH=$WORK/tree-cand
else
    note "full mode: the revisions declare different dependencies; one venv each"
    venv "$WORK/venv-base" "$WORK/tree-base"
    venv "$WORK/venv-cand" "$WORK/tree-cand"
    set -- --baseline-python "$WORK/venv-base/bin/python" --baseline-label "$BASE_REV (${base_sha:0:8})" \
           --candidate-python "$WORK/venv-cand/bin/python" --candidate-label "$CAND_REV (${cand_sha:0:8})" "$@"
    GATE_PY=$WORK/venv-cand/bin/python
    GATE_PATH=
fi

# The gate itself is the candidate's aibench (it only orchestrates and decides; the sides measure).
status=0
PYTHONPATH=$GATE_PATH PYTHONSAFEPATH=1 "$GATE_PY" -m aibench gate "$@" || status=$?
exit $status

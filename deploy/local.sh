#!/usr/bin/env bash
# A real Flower deployment on this machine: SuperLink + one SuperNode per owner on 127.0.0.1,
# TLS with a private CA and SuperNode authentication; values owners of the embedded market.
#
#   deploy/local.sh [--out DIR] [--owners clean,noisy,flipped] [--seed N] [--scale N] [--epochs E] [--audit K]
#
# The work is done by deploy/local.py, which stops every process it starts. This wrapper is the
# second line of defence: if the Python process is killed outright (SIGKILL, OOM), the EXIT trap
# still stops the process groups it recorded and anything naming its private work directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="${FAIRPOOL_VENV_BIN:-$ROOT/.venv/bin}"
if [[ ! -x "$VENV_BIN/python" ]]; then
    echo "error: $VENV_BIN/python not found: run 'make venv' first (or set FAIRPOOL_VENV_BIN)" >&2
    exit 2
fi
export PATH="$VENV_BIN:$PATH"
export FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 HF_HUB_OFFLINE=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fairpool-local-XXXXXX")"
PIDS="$WORK/pids"
: > "$PIDS"

cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    # Process groups the Python side recorded and did not already stop.
    while read -r pid; do
        [[ -n "$pid" ]] && kill -TERM -- "-$pid" 2>/dev/null || true
    done < "$PIDS"
    # Detached Flower children (SuperExec, app processes) that still name the work directory.
    for cmdline in /proc/[0-9]*/cmdline; do
        pid="${cmdline#/proc/}"; pid="${pid%/cmdline}"
        [[ "$pid" == "$$" ]] && continue
        if tr '\0' ' ' < "$cmdline" 2>/dev/null | grep -qF -- "$WORK/fairpool-deploy-"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

cd "$ROOT"
# In the background so a signal to this script is handled now, not after the run: it is passed
# on to Python, which unwinds through its own cleanup before the EXIT trap runs.
"$VENV_BIN/python" -m deploy.local --pid-file "$PIDS" --work-dir "$WORK" "$@" &
PY=$!
forward() {
    kill -TERM "$PY" 2>/dev/null || true
    wait "$PY" 2>/dev/null || true
    exit "$1"
}
trap 'forward 130' INT
trap 'forward 143' TERM
trap 'forward 129' HUP
wait "$PY"

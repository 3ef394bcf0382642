#!/usr/bin/env bash
# ray_bootstrap.sh head|worker: one node of a Ray cluster inside an HTCondor job.
#
# ProcId 0 of the HTCondor cluster runs "head" (Ray head, then the driver, RAYTRACK_DRIVER);
# every other job runs "worker". They meet through RAYTRACK_CLUSTER_DIR on the shared
# filesystem. The logic lives in raytrack/condor_bootstrap.py; this script only prepares the
# environment: relative paths are taken from the job's start directory (the checkout), and
# RAYTRACK_VENV (a virtual environment directory, or a script to source, e.g. a conda activate
# script) is activated when set.
set -euo pipefail

role="${1:-}"
if [[ "$role" != head && "$role" != worker ]]; then
    echo "usage: $0 head|worker" >&2
    exit 2
fi

venv="${RAYTRACK_VENV:-}"
if [[ -n "$venv" ]]; then
    [[ "$venv" == /* ]] || venv="$PWD/$venv"
    if [[ -d "$venv" ]]; then
        # shellcheck disable=SC1091
        source "$venv/bin/activate"
    else
        # shellcheck disable=SC1090
        source "$venv"
    fi
fi

# Jobs may start without HOME (getenv = false); caches of torch and matplotlib need one.
export HOME="${HOME:-${_CONDOR_SCRATCH_DIR:-/tmp}}"

# exec: SIGTERM from condor_rm or an eviction reaches the bootstrap itself.
exec python -m raytrack.condor_bootstrap "$role"

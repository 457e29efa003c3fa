#!/usr/bin/env bash
# Train the runs of a manifest role with N parallel single-threaded workers (skips finished runs;
# an interrupted run resumes). Usage: benchmarks/phase_eval/run_queue.sh ROLE [N] [MANIFEST]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROLE=$1; N=${2:-2}; MANIFEST=${3:-benchmarks/phase_eval/zoo_runs.json}
.venv/bin/python - "$ROLE" "$MANIFEST" <<'PY' | xargs -P "$N" -I{} bash -c '{}'
import json, shlex, sys
role, manifest = sys.argv[1], sys.argv[2]
for r in json.load(open(manifest))["runs"]:
    if r["role"] == role:
        cmd = r["command"].replace("htsr-diag", ".venv/bin/htsr-diag", 1)
        log = r["dir"] + ".log"
        print(shlex.quote(f"mkdir -p runs/zoo && {cmd} > {log} 2>&1 && echo done {r['name']} || echo FAILED {r['name']}"))
PY

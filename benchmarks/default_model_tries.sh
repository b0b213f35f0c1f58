#!/usr/bin/env bash
# The recipe tries of issue #24, one after another, each a delta of config/train/camvid.yaml
# (config/train/tries/NAME.yaml), trained on CamVid train and validated on val:
#
#   setsid nohup nice -n 19 benchmarks/default_model_tries.sh > runs/tries/driver.log 2>&1 &
#
# Each try trains into runs/tries/NAME (its own train.log, last.pt every 225 steps). A run
# folder that exists is resumed, one whose summary.json says finished is skipped, so the
# script can be started again after a cut-off and loses at most 225 steps.
#   TRIES="ema ema_aux"   the tries to run, in order (default: all, in the order below)
#   FINAL=NAME            instead, train the final model with try NAME's recipe on train + val
#                         (no held-out validation) into runs/tries/final_NAME
# Run from anywhere; uses the checkout the script is in (PYTHONPATH) and the active Python.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TRIES=${TRIES:-"ema ema_aux ema_aux_fullframe ema_aux_100ep"}

overrides() {   # the KEY=VALUE overrides of one try's delta file, one per line
    python - "$1" <<'PY'
import json, sys, yaml
with open(sys.argv[1], encoding='utf-8') as stream:
    delta = yaml.safe_load(stream) or {}
for key, value in delta.items():
    print(f'{key}={json.dumps(value)}')     # JSON is YAML: the override parser reads it
PY
}

train_try() {   # NAME OUTPUT [extra overrides...]
    local name=$1 output=$2
    shift 2
    if [[ -f $output/summary.json ]] && grep -q '"finished": true' "$output/summary.json"; then
        echo "$(date -u +%FT%TZ) $name: finished before, skipped"
        return
    fi
    mapfile -t delta < <(overrides "config/train/tries/$name.yaml")
    echo "$(date -u +%FT%TZ) $name: training into $output (${delta[*]} $*)"
    mkdir -p "$output"
    nice -n 19 python -m seg_perception.cli train --config config/train/camvid.yaml \
        --output "$output" --resume "${delta[@]}" train.checkpoint_every=225 "$@" \
        || echo "$(date -u +%FT%TZ) $name: failed (exit $?), see $output/train.log"
}

if [[ -n ${FINAL:-} ]]; then
    train_try "$FINAL" "runs/tries/final_$FINAL" 'data.train_splits=[train, val]'
else
    for name in $TRIES; do
        train_try "$name" "runs/tries/$name"
    done
fi
echo "$(date -u +%FT%TZ) done"

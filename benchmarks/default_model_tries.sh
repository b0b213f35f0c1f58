#!/usr/bin/env bash
# The recipe tries of issue #24, one after another, each a delta of config/train/camvid.yaml
# (config/train/tries/NAME.yaml), trained on CamVid train and validated on val:
#
#   mkdir -p runs/tries
#   setsid nohup nice -n 19 benchmarks/default_model_tries.sh > runs/tries/driver.log 2>&1 &
#
# Each try trains into runs/tries/NAME (its own train.log, last.pt every 225 steps), then
# default_model_candidate.sh turns it into runs/tries/NAME/candidate (the model as it would
# ship, INT8 form, per-class table, comma10k figure; candidate.log beside it). A run
# folder that exists is resumed, one whose summary.json says finished is skipped, so the
# script can be started again after a cut-off and loses at most 225 steps. A try that
# distils from a teacher (train.distill) waits for the teacher's run to have finished: it is
# skipped until then.
#   TRIES="ema ema_aux"   the tries to run, in order (default: all, in the order below)
#   FINAL=NAME            instead, train the final model with try NAME's recipe on train + val
#                         (no held-out validation) into runs/tries/final_NAME
# Run from anywhere; uses the checkout the script is in (PYTHONPATH) and the active Python.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The stacked try second: on this 2-core CPU a try takes about 3 hours, so the run that says
# whether the cheap changes help at all goes before the ones that say which of them does.
TRIES=${TRIES:-"ema ema_aux_fullframe_100ep ema_aux ema_aux_fullframe ema_aux_100ep ema_aux_glare teacher_textbook ema_aux_distill"}

overrides() {   # the KEY=VALUE overrides of one try's delta file, one per line
    python - "$1" <<'PY'
import json, sys, yaml
with open(sys.argv[1], encoding='utf-8') as stream:
    delta = yaml.safe_load(stream) or {}
for key, value in delta.items():
    print(f'{key}={json.dumps(value)}')     # JSON is YAML: the override parser reads it
PY
}

teacher_of() {  # the teacher checkpoint a delta file distils from, or nothing
    python - "$1" <<'PY'
import sys, yaml
with open(sys.argv[1], encoding='utf-8') as stream:
    delta = yaml.safe_load(stream) or {}
print((delta.get('train.distill') or {}).get('teacher', ''))
PY
}

finished() {    # RUN_FOLDER: has its run reached the end of its schedule?
    [[ -f $1/summary.json ]] && grep -q '"finished": true' "$1/summary.json"
}

failed() {      # NAME STATUS LOG (the status passed in: $(date) would reset $?)
    echo "$(date -u +%FT%TZ) $1: failed (exit $2), see $3"
}

candidate() {   # NAME OUTPUT: the finished run as it would ship, and its figures
    if finished "$2" && [[ ! -f $2/candidate/summary.md ]]; then
        echo "$(date -u +%FT%TZ) $1: candidate model and its figures into $2/candidate"
        nice -n 19 benchmarks/default_model_candidate.sh "$2" > "$2/candidate.log" 2>&1 \
            || failed "$1" $? "$2/candidate.log"
    fi
}

train_try() {   # NAME OUTPUT [extra overrides...]
    local name=$1 output=$2 file=config/train/tries/$1.yaml teacher
    shift 2
    if finished "$output"; then
        echo "$(date -u +%FT%TZ) $name: finished before, skipped"
        candidate "$name" "$output"
        return
    fi
    teacher=$(teacher_of "$file")
    if [[ -n $teacher ]] && ! finished "$(dirname "$teacher")"; then
        echo "$(date -u +%FT%TZ) $name: skipped, its teacher $teacher has not finished training"
        return
    fi
    mapfile -t delta < <(overrides "$file")
    echo "$(date -u +%FT%TZ) $name: training into $output (${delta[*]} $*)"
    mkdir -p "$output"
    nice -n 19 python -m seg_perception.cli train --config config/train/camvid.yaml \
        --output "$output" --resume "${delta[@]}" train.checkpoint_every=225 "$@" \
        || failed "$name" $? "$output/train.log"
    candidate "$name" "$output"
}

if [[ -n ${FINAL:-} ]]; then
    train_try "$FINAL" "runs/tries/final_$FINAL" 'data.train_splits=[train, val]'
else
    for name in $TRIES; do
        train_try "$name" "runs/tries/$name"
    done
fi
echo "$(date -u +%FT%TZ) done"

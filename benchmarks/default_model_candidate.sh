#!/usr/bin/env bash
# A trained run's model as the default would ship it, with every figure DEFAULT_MODEL.md keeps
# for it (issue #24):
#
#   benchmarks/default_model_candidate.sh RUN_FOLDER [OUTPUT_FOLDER]
#
# From RUN_FOLDER/last.pt (its weight average, when the run kept one; export takes it), into
# OUTPUT_FOLDER (default RUN_FOLDER/candidate):
#   model.onnx            fp32, labels at network resolution, as the shipped default
#   model.cpu.int8.onnx   its INT8 form as shipped: cpu target, minmax on 100 CamVid train frames
#   eval_fp32/ eval_int8/ CamVid val through ONNX Runtime: mIoU and the per-class table
#                         (training accuracy for a run that trained on val: said in summary.md)
#   bonnet.md             comma10k drivable IoU of both, bonnet counted (drivable_bonnet.py)
#   graph.md              against the shipped default: same operators and weight shapes means
#                         the same runtime cost (compare_graphs.py)
#   summary.md            the headline figures of the above
# Steps whose output exists are not redone, so the script can be rerun after a cut-off.
# To ship a candidate: copy model.onnx and model.cpu.int8.onnx over
# seg_perception/assets/default_model.onnx and default_model.cpu.int8.onnx, then set the
# figures the repository states for the default model from summary.md and bonnet.md:
# test/test_default_model.py (DRIVABLE_IOU_MEASURED, INT8_DRIVABLE_IOU_MEASURED), README
# ("The default model"), benchmarks/DEFAULT_MODEL.md and benchmarks/INT8.md.
#   CAMVID=DIR   CamVid (SegNet layout), default ../shared/data/camvid
# Run from anywhere; uses the checkout the script is in (PYTHONPATH) and the active Python.
set -euo pipefail
[[ $# -ge 1 && $# -le 2 ]] || { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
run=$(realpath "$1")
out=$(realpath -m "${2:-$run/candidate}")
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
camvid=${CAMVID:-../shared/data/camvid}
[[ -f $run/last.pt ]] || { echo "$run/last.pt: no such checkpoint" >&2; exit 2; }
[[ -d $camvid/val ]] || { echo "$camvid: no CamVid val split here (set CAMVID=)" >&2; exit 2; }
mkdir -p "$out"
cli() { python -m seg_perception.cli "$@"; }
step() { echo "$(date -u +%FT%TZ) $*"; }

if [[ ! -f $out/model.onnx ]]; then
    step "export $run/last.pt"
    cli export --checkpoint "$run/last.pt" --output "$out/model.onnx" --output-resolution network
fi
if [[ ! -f $out/model.cpu.int8.onnx ]]; then
    step "quantize (cpu target, minmax, 100 train frames)"
    cli quantize --model "$out/model.onnx" --dataset camvid --root "$camvid" --split train \
        --count 100 --target cpu --calibration minmax --output "$out/model.cpu.int8.onnx"
fi
# fp32 named: at 'auto' a VNNI CPU would run the INT8 file beside model.onnx instead
for form in fp32 int8; do
    model=$out/model.onnx
    [[ $form == int8 ]] && model=$out/model.cpu.int8.onnx
    if [[ ! -f $out/eval_$form/metrics.json ]]; then
        step "evaluate $form on CamVid val"
        cli evaluate --model "$model" --dataset camvid --root "$camvid" --split val \
            --backend onnxruntime --precision "$form" --output "$out/eval_$form" > /dev/null
    fi
done
if [[ ! -f $out/bonnet.md ]]; then
    step "comma10k drivable IoU, bonnet counted"
    python benchmarks/drivable_bonnet.py --model "fp32=$out/model.onnx" \
        --model "INT8=$out/model.cpu.int8.onnx" > "$out/bonnet.md.part"
    mv "$out/bonnet.md.part" "$out/bonnet.md"
fi
python benchmarks/compare_graphs.py seg_perception/assets/default_model.onnx \
    "$out/model.onnx" > "$out/graph.md" || true

python - "$run" "$out" > "$out/summary.md" <<'PY'
import json, os, re, sys
import yaml
run, out = sys.argv[1:]
with open(os.path.join(run, 'config.yaml'), encoding='utf-8') as stream:
    config = yaml.safe_load(stream)
splits = (config.get('data') or {}).get('train_splits') or ['train']
print(f'# Candidate from `{run}`', end='\n\n')
if 'val' in splits:
    print('**Trained on val too**: the val figures below are training accuracy, not a test.',
          end='\n\n')
fp32 = json.load(open(os.path.join(out, 'eval_fp32', 'metrics.json'), encoding='utf-8'))
int8 = json.load(open(os.path.join(out, 'eval_int8', 'metrics.json'), encoding='utf-8'))
miou = lambda metrics: 100 * metrics['miou']
print(f'- CamVid val mIoU: fp32 {miou(fp32):.2f} %, INT8 {miou(int8):.2f} % '
      f'({miou(int8) - miou(fp32):+.2f})')
names = fp32['class_names']
print('', '| | mIoU | pixel acc. | ' + ' | '.join(names) + ' |',
      '|---' * (len(names) + 3) + '|', sep='\n')
for form, metrics in (('fp32', fp32), ('INT8', int8)):
    cells = [f'{100 * metrics["per_class_iou"][name]:.2f}' for name in names]
    print(f'| {form} | {miou(metrics):.2f} | {100 * metrics["pixel_accuracy"]:.2f} | '
          + ' | '.join(cells) + ' |')
print()
bonnet = open(os.path.join(out, 'bonnet.md'), encoding='utf-8').read()
for name in ('fp32', 'INT8'):
    found = re.search(rf'^\| {name} \| \(c\)[^|]*\| \*\*([0-9.]+)\*\*', bonnet, re.M)
    print(f'- comma10k drivable IoU, bonnet counted and given as ego mask, {name}: '
          f'{found.group(1) if found else "?"}')
print(open(os.path.join(out, 'graph.md'), encoding='utf-8').read().rstrip())
PY
cat "$out/summary.md"

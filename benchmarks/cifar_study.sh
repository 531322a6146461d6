#!/usr/bin/env bash
# CIFAR-10 study: defended single-exit and RDI ResNet-38 / MobileNetV2, one CPU budget for every run,
# then the TF-MOT pruned ResNet-38 at the RDI max_average model's average cost.
# Re-creates every model of the CIFAR-10 study in benchmarks/RESULTS.md; a finished run is skipped, an interrupted one resumes
# (rdinet-train's run directory), so the script can be started again after a kill.
# Usage: benchmarks/cifar_study.sh [DATA_DIR] [OUT_ROOT] [RUN ...]   (default: every run, in order)
set -euo pipefail
data_dir=${1:-../shared/data}
out=${2:-runs/cifar}
shift $(( $# < 2 ? $# : 2 ))
# One budget for every run: fast adversarial training (FGSM with random start, step 1.25 eps, eps 8/255),
# batch 128, the paper recipe's step decay scaled to the run, 45,000 training images of cifar10_train.npz with the
# paper's augmentation (5,000 held out: calibration and validation). Evaluation: TA on all 10,000 test images,
# PGD-20 (eps 8/255, step 2/255, random start) on the first 1,000 with every attack form.
# An RDI epoch takes about 2,350 s for MobileNetV2 and 410-470 s for ResNet-38 on the quiet 2-core machine
# (see benchmarks/RESULTS.md): the MobileNetV2 runs train 1 epoch (MOBILENETV2_EPOCHS, about 40 minutes; 2 would
# take 80, beyond the study's hour per run), the ResNet-38 runs 4 (about 30 minutes); each RDI model is compared
# with the baseline of its own backbone, trained alike.
# EPOCHS, STEPS_PER_EPOCH and EVAL_SAMPLES override the budget (a smoke run: EPOCHS=1 STEPS_PER_EPOCH=2 EVAL_SAMPLES=16).
epochs=${EPOCHS:-4}
mobilenetv2_epochs=${MOBILENETV2_EPOCHS:-1}
budget=(--batch-size 128 ${STEPS_PER_EPOCH:+--steps-per-epoch "$STEPS_PER_EPOCH"})
# The study's attack forms: every single exit, average, max-average and routing (the report's default set
# also has the exit-hijack attack, added after the study; every run of the study is evaluated alike).
forms=exit_1,exit_2,exit_3,exit_4,exit_5,exit_6,exit_7,average,max_average,routing
evaluation=(--eval-attack-steps 20 --eval-samples "${EVAL_SAMPLES:-1000}")
common=(--dataset cifar10 --data-dir "$data_dir" --fast "${budget[@]}" "${evaluation[@]}" --eval-objectives "$forms"
        --quiet)
single_exit=(--defense main --calibration none --eval-objectives main)
declare -A runs=(
    [resnet38_single_exit]="--model resnet38 --epochs $epochs ${single_exit[*]} --exit-weights 0,0,0,0,0,0,1"
    [resnet38_main]="--model resnet38 --epochs $epochs --defense main"
    [resnet38_average]="--model resnet38 --epochs $epochs --defense average"
    [resnet38_max_average]="--model resnet38 --epochs $epochs --defense max_average"
    [mobilenetv2_single_exit]="--model mobilenetv2 --epochs $mobilenetv2_epochs ${single_exit[*]} --exit-weights 0,0,0,0,0,0,1"
    [mobilenetv2_max_average]="--model mobilenetv2 --epochs $mobilenetv2_epochs --defense max_average"
)
order=(resnet38_max_average resnet38_single_exit resnet38_pruned resnet38_pruned_50 mobilenetv2_max_average
       mobilenetv2_single_exit resnet38_main resnet38_average)
# The pruned baselines: the single-exit ResNet-38 pruned with TF-MOT to the RDI max_average model's average test cost
# (honest MFLOPs) and to 50% sparsity, each fine-tuned adversarially for one epoch with the same attack.
prune() {  # NAME TARGET_FLAGS...
    python -m rdinet_tf.cli.prune --model "$out/resnet38_single_exit/model.keras" --dataset cifar10 \
        --data-dir "$data_dir" --fast --epochs 1 --batch-size 128 ${STEPS_PER_EPOCH:+--steps-per-epoch "$STEPS_PER_EPOCH"} \
        "${evaluation[@]}" --quiet --out "$out/$1" "${@:2}"
}
for run in "${@:-${order[@]}}"; do
    if [ -f "$out/$run/summary.json" ]; then
        echo "$run: done ($out/$run)"
    elif [ "$run" = resnet38_pruned ]; then
        rdi_cost=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['test_clean']['mflops'])" \
                   "$out/resnet38_max_average/summary.json")
        prune resnet38_pruned --target-mflops "$rdi_cost"
    elif [ "$run" = resnet38_pruned_50 ]; then
        prune resnet38_pruned_50 --target-sparsity 0.5
    else
        # shellcheck disable=SC2086  # the run's flags are words
        python -m rdinet_tf.cli.train "${common[@]}" ${runs[$run]} --out "$out/$run"
    fi
done

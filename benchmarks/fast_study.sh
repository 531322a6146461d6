#!/usr/bin/env bash
# The time-to-robust-accuracy study: models trained with `rdinet-train --recipe fast` (N-FGSM or FGSM with a random
# start, one-cycle learning rate, the catastrophic-overfitting guard), one run at a time, each resumable: a finished
# run is skipped, an interrupted one resumes from its last finished epoch when the script is started again.
# Usage: benchmarks/fast_study.sh [DATA_DIR] [OUT_ROOT] [RUN ...]   (default: every run, in order)
# Evaluation: TA on all test images; on the first 1,000 every PGD form (each exit, average, max-average,
# routing-aware, exit hijack), the slowdown attacks, and the per-sample worst case. CIFAR-10: PGD-20 at eps 8/255,
# step 2/255; MNIST: PGD-40 at eps 0.3, step 0.01 (the paper's protocols).
# EPOCHS, STEPS_PER_EPOCH and EVAL_SAMPLES override the budget (a smoke run: EPOCHS=1 STEPS_PER_EPOCH=2 EVAL_SAMPLES=16).
set -euo pipefail
data_dir=${1:-../shared/data}
out=${2:-runs/fast}
shift $(( $# < 2 ? $# : 2 ))
budget=(${EPOCHS:+--epochs "$EPOCHS"} ${STEPS_PER_EPOCH:+--steps-per-epoch "$STEPS_PER_EPOCH"})
evaluation=(--eval-samples "${EVAL_SAMPLES:-1000}" --quiet)
cifar=(--dataset cifar10 --data-dir "$data_dir" --recipe fast --eval-attack-steps 20 "${budget[@]}" "${evaluation[@]}")
mnist=(--dataset mnist --data-dir "$data_dir" --recipe fast --eval-attack-steps 40 "${budget[@]}" "${evaluation[@]}")
single_exit=(--defense main --calibration none --eval-objectives main)
declare -A runs=(
    [cifar10_resnet38_max_average]="--model resnet38 ${cifar[*]} --defense max_average"
    [cifar10_resnet38_single_exit]="--model resnet38 ${cifar[*]} ${single_exit[*]} --exit-weights 0,0,0,0,0,0,1"
    [mnist_smallcnn_max_average]="--model smallcnn ${mnist[*]} --defense max_average"
    [mnist_smallcnn_single_exit]="--model smallcnn ${mnist[*]} ${single_exit[*]} --exit-weights 0,0,1"
    [cifar10_mobilenetv2_max_average]="--model mobilenetv2 ${cifar[*]} --defense max_average"
    # The policy-aware defenses (thresholds calibrated on the validation split before each epoch).
    [mnist_smallcnn_routing]="--model smallcnn ${mnist[*]} --defense routing"
    [mnist_smallcnn_exit_hijack]="--model smallcnn ${mnist[*]} --defense exit_hijack"
    [mnist_smallcnn_worst_case]="--model smallcnn ${mnist[*]} --defense worst_case"
    [mnist_smallcnn_worst_case_abstention]="--model smallcnn ${mnist[*]} --defense worst_case --abstention-weight 1"
    [cifar10_resnet38_routing]="--model resnet38 ${cifar[*]} --defense routing"
    [cifar10_resnet38_exit_hijack]="--model resnet38 ${cifar[*]} --defense exit_hijack"
    [cifar10_resnet38_worst_case]="--model resnet38 ${cifar[*]} --defense worst_case"
    [cifar10_resnet38_worst_case_abstention]="--model resnet38 ${cifar[*]} --defense worst_case --abstention-weight 1"
)
order=(cifar10_resnet38_max_average cifar10_resnet38_single_exit mnist_smallcnn_max_average mnist_smallcnn_single_exit
       mnist_smallcnn_worst_case_abstention cifar10_mobilenetv2_max_average)
for run in "${@:-${order[@]}}"; do
    if [ -f "$out/$run/summary.json" ]; then
        echo "$run: done ($out/$run)"
    else
        # shellcheck disable=SC2086  # the run's flags are words
        python -m rdinet_tf.cli.train ${runs[$run]} --out "$out/$run"
    fi
done

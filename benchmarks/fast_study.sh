#!/usr/bin/env bash
# The time-to-robust-accuracy study: models trained with `rdinet-train --recipe fast` (N-FGSM or FGSM with a random
# start, one-cycle learning rate, the catastrophic-overfitting guard), one run at a time, each resumable: a finished
# run is skipped, an interrupted one resumes from its last finished epoch when the script is started again.
# Usage: benchmarks/fast_study.sh [DATA_DIR] [OUT_ROOT] [RUN ...]   (default: every run, in order)
# Evaluation: TA on all test images; on the first 1,000 every PGD form (each exit, average, max-average,
# routing-aware, exit hijack), the slowdown attacks, and the per-sample worst case. CIFAR-10: PGD-20 at eps 8/255,
# step 2/255; MNIST: PGD-40 at eps 0.3, step 0.01 (the paper's protocols).
# A run named RUN_suite (RUN: any run here, the pruned ones too) re-evaluates RUN's model with the AutoAttack-style
# suite on the routed output added (APGD-CE, APGD-DLR, APGD-T with 3 targets, 100 iterations each; Square, 1,000
# queries), into RUN/report_suite.json; the suite attacks only the samples every PGD form and slowdown attack left
# correct (--autoattack-after-report: the same per-sample worst case in less time). Its attacks are kept in
# RUN/suite_attacks until the report is written: an interrupted suite run started again resumes from them.
# A run named DATASET_MODEL_pruned prunes the single-exit model with TF-MOT to the clean cost of the max_average
# model and fine-tunes it for one epoch with the recipe's attack (both runs must be done).
# EPOCHS, STEPS_PER_EPOCH and EVAL_SAMPLES override the budget (a smoke run: EPOCHS=1 STEPS_PER_EPOCH=2 EVAL_SAMPLES=16).
set -euo pipefail
data_dir=${1:-../shared/data}
out=${2:-runs/fast}
shift $(( $# < 2 ? $# : 2 ))
samples=${EVAL_SAMPLES:-1000}
budget=(${EPOCHS:+--epochs "$EPOCHS"} ${STEPS_PER_EPOCH:+--steps-per-epoch "$STEPS_PER_EPOCH"})
evaluation=(--eval-samples "$samples" --quiet)
cifar=(--dataset cifar10 --data-dir "$data_dir" --recipe fast --eval-attack-steps 20 "${budget[@]}" "${evaluation[@]}")
mnist=(--dataset mnist --data-dir "$data_dir" --recipe fast --eval-attack-steps 40 "${budget[@]}" "${evaluation[@]}")
single_exit=(--defense main --calibration none --eval-objectives main)
# Two hours of training on the quiet 2-core Intel Xeon (976 s per ResNet-38 max_average epoch, 2,660 s per
# MobileNetV2 epoch of 352 steps): 7 ResNet-38 epochs; 3 MobileNetV2 epochs of 317 steps. The single-exit baseline
# attacks one exit instead of seven (about 500 s per epoch): 14 epochs, the RDI model's training time. The
# policy-aware ResNet-38 runs get that time too, from the epoch-time ratios of recipe_epoch_time.py (RESULTS.md):
# routing 14 epochs, exit hijack 7, worst case 4, worst case + slowdown 4 of 317 steps. On MNIST the RDI model
# trains the recipe's 10 epochs and each other run that time by the same rule: single-exit and routing 14, exit
# hijack 12, worst case 6, worst case + slowdown 5.
# EPOCHS and STEPS_PER_EPOCH come after: they win.
trained() {  # trained MODEL EPOCHS [STEPS_PER_EPOCH]: the flags of MODEL's run on its dataset for that budget
    local -n dataset=$([ "$1" = smallcnn ] && echo mnist || echo cifar)
    echo --model "$1" --epochs "$2" ${3:+--steps-per-epoch "$3"} "${dataset[@]}"
}
declare -A runs=(
    [cifar10_resnet38_max_average]="$(trained resnet38 7) --defense max_average"
    [cifar10_resnet38_single_exit]="$(trained resnet38 14) ${single_exit[*]} --exit-weights 0,0,0,0,0,0,1"
    [mnist_smallcnn_max_average]="$(trained smallcnn 10) --defense max_average"
    [mnist_smallcnn_single_exit]="$(trained smallcnn 14) ${single_exit[*]} --exit-weights 0,0,1"
    [cifar10_mobilenetv2_max_average]="$(trained mobilenetv2 3 317) --defense max_average"
    # The policy-aware defenses (thresholds calibrated on the validation split before each epoch).
    [mnist_smallcnn_routing]="$(trained smallcnn 14) --defense routing"
    [mnist_smallcnn_exit_hijack]="$(trained smallcnn 12) --defense exit_hijack"
    [mnist_smallcnn_worst_case]="$(trained smallcnn 6) --defense worst_case"
    [mnist_smallcnn_worst_case_abstention]="$(trained smallcnn 6) --defense worst_case --abstention-weight 1"
    # ... with the slowdown defense term (slowdown examples made with the recipe's single-step attack). On MNIST at
    # a peak learning rate of 0.02: at the recipe's 0.05 the loss became NaN in epoch 3, just past the peak.
    [mnist_smallcnn_worst_case_slowdown]="$(trained smallcnn 5) --defense worst_case --slowdown-weight 2 --lr 0.02"
    [cifar10_resnet38_routing]="$(trained resnet38 14) --defense routing"
    [cifar10_resnet38_exit_hijack]="$(trained resnet38 7) --defense exit_hijack"
    [cifar10_resnet38_worst_case]="$(trained resnet38 4) --defense worst_case"
    [cifar10_resnet38_worst_case_abstention]="$(trained resnet38 4) --defense worst_case --abstention-weight 1"
    [cifar10_resnet38_worst_case_slowdown]="$(trained resnet38 4 317) --defense worst_case --slowdown-weight 2"
)
order=(cifar10_resnet38_max_average mnist_smallcnn_max_average mnist_smallcnn_single_exit mnist_smallcnn_pruned
       mnist_smallcnn_worst_case_abstention mnist_smallcnn_routing mnist_smallcnn_exit_hijack mnist_smallcnn_worst_case
       mnist_smallcnn_worst_case_slowdown cifar10_resnet38_single_exit cifar10_resnet38_pruned
       cifar10_resnet38_routing cifar10_resnet38_exit_hijack cifar10_resnet38_worst_case_slowdown
       cifar10_resnet38_worst_case cifar10_resnet38_worst_case_abstention cifar10_mobilenetv2_max_average)

flag() {  # flag RUN NAME: the value of --NAME among RUN's flags
    local words=(${runs[$1]})
    for i in "${!words[@]}"; do [ "${words[$i]}" != "--$2" ] || echo "${words[$((i + 1))]}"; done
}

clean_mflops() {  # clean_mflops RUN: the honest MFLOPs of RUN's adaptive model on the test images
    [ -f "$out/$1/summary.json" ] || { echo "fast_study.sh: $run needs $1 done first (no $out/$1/summary.json)" >&2
                                       exit 2; }
    python -c 'import json, sys; print(json.load(open(sys.argv[1]))["test_clean"]["mflops"])' "$out/$1/summary.json"
}

for run in "${@:-${order[@]}}"; do
    case $run in
        *_suite)
            trained=${run%_suite}
            like=$trained  # the run whose flags it shares (a pruned model: its single-exit source)
            [[ $trained == *_pruned ]] && like=${trained%_pruned}_single_exit
            result=$out/$trained/report_suite.json
            objectives=()
            [[ " ${runs[$like]} " == *" --eval-objectives main "* ]] && objectives=(--objectives main)
            command=(rdinet_tf.cli.evaluate --model "$out/$trained/model.keras" --dataset "$(flag "$like" dataset)"
                     --data-dir "$data_dir" --attack-steps "$(flag "$like" eval-attack-steps)" --samples "$samples"
                     "${objectives[@]}" --autoattack --autoattack-after-report --autoattack-steps 100
                     --autoattack-targets 3 --autoattack-queries 1000 --attack-cache "$out/$trained/suite_attacks"
                     --out "$result") ;;
        *_pruned)
            base=${run%_pruned}
            result=$out/$run/summary.json
            steps=$(flag "${base}_single_exit" eval-attack-steps)
            attack=$([ "$steps" = 40 ] && echo fast_fgsm || echo n_fgsm)  # the recipe's attack (MNIST: FGSM-RS)
            command=(rdinet_tf.cli.prune --model "$out/${base}_single_exit/model.keras"
                     --dataset "$(flag "${base}_single_exit" dataset)" --data-dir "$data_dir"
                     --target-mflops "$(clean_mflops "${base}_max_average")" --train-attack "$attack"
                     ${STEPS_PER_EPOCH:+--steps-per-epoch "$STEPS_PER_EPOCH"} --eval-attack-steps "$steps"
                     --eval-samples "$samples" --quiet --out "$out/$run") ;;
        *)
            [ -n "${runs[$run]+set}" ] || { echo "fast_study.sh: no run $run; choose from ${!runs[*]}" \
                "(or one of them followed by _suite, or DATASET_MODEL_pruned)" >&2; exit 2; }
            result=$out/$run/summary.json
            # shellcheck disable=SC2206  # the run's flags are words
            command=(rdinet_tf.cli.train ${runs[$run]} --out "$out/$run") ;;
    esac
    if [ -f "$result" ]; then
        echo "$run: done ($result)"
    else
        python -m "${command[@]}"
    fi
done

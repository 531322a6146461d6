#!/usr/bin/env bash
# Real-MNIST comparison: a defended single-exit SmallCNN against RDI-SmallCNN
# with each defense, all on one CPU budget, each evaluated on all 10,000 test images.
# Then: python benchmarks/mnist_table.py runs/mnist
# (python -m rdinet_tf.cli.train / .cli.evaluate are the rdinet-train / rdinet-evaluate console scripts.)
# Usage: benchmarks/mnist_rdi.sh [DATA_DIR] [OUT_ROOT]
set -euo pipefail
data_dir=${1:-../shared/data}
out=${2:-runs/mnist}
# One budget for every run: 3 epochs of fast adversarial training (FGSM, random start,
# step 1.25 eps = 0.375, eps 0.3), batch 128. The training run's own check attacks 100 test
# images; the report (PGD-40, eps 0.3, step 0.01) then covers the whole test split.
common=(--model smallcnn --dataset mnist --data-dir "$data_dir" --fast --epochs 3 --batch-size 128
        --eval-attack-steps 40 --eval-samples 100 --quiet)
evaluate() {  # RUN [evaluate flags]
    python -m rdinet_tf.cli.evaluate --model "$out/$1/model.keras" --dataset mnist --data-dir "$data_dir" \
        --attack-steps 40 --out "$out/$1/report.json" "${@:2}"
}
python -m rdinet_tf.cli.train "${common[@]}" --defense main --exit-weights 0,0,1 --calibration none \
    --eval-objectives main --out "$out/single_exit"
for defense in main average max_average; do
    python -m rdinet_tf.cli.train "${common[@]}" --defense "$defense" --out "$out/rdi_$defense"
done
evaluate single_exit --objectives main
for defense in main average max_average; do
    evaluate "rdi_$defense"
done

#!/usr/bin/env bash
# Issue 6's measurements: 3 seeds per setting, aggregated by benchmarks/transfer_seeds.py.
# Usage: benchmarks/transfer_all.sh RUNS_DIR CIFAR_NPZ [PYTHON]
set -u
runs=${1:?runs folder}; npz=${2:?path to cifar10_subset.npz}; py=${3:-python3}
bench="$py benchmarks/transfer_seeds.py --seeds 0,1,2"
cifar="dataset=cifar10 data_dir=$npz model=vgg8 width=0.5 lr=0.002"
$bench --out "$runs/digits-switch" dataset=mnist-digits transfer=switch:digits keep_best=true
$bench --out "$runs/digits-classsplit" dataset=mnist-digits transfer=class-split keep_best=true
$bench --out "$runs/cifar-colour-4k" $cifar train_size=4000 iterations=2048 transfer=colour keep_best=true
$bench --out "$runs/cifar-colour-10k" $cifar iterations=8192 transfer=colour keep_best=true
$bench --out "$runs/cifar-classsplit-10k" $cifar iterations=8192 transfer=class-split keep_best=true

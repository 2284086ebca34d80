#!/usr/bin/env bash
# Issue 6's measurements: 3 seeds per setting, aggregated by benchmarks/transfer_seeds.py.
# Usage (from the repository root): PYTHONPATH=src benchmarks/transfer_all.sh RUNS_DIR CIFAR_NPZ [PYTHON]
# CPU times seen on 2 shared cores: mnist-digits ~10 min a seed, CIFAR 4k/2048 ~4-6 min, CIFAR 10k/8192 ~12-20 min.
set -u
runs=${1:?runs folder}; npz=${2:?path to cifar10_subset.npz}; py=${3:-python}
bench="$py benchmarks/transfer_seeds.py --seeds 0,1,2"
cifar="dataset=cifar10 data_dir=$npz model=vgg8 width=0.5 lr=0.002 keep_best=true"
$bench --out "$runs/digits-switch" dataset=mnist-digits transfer=switch:digits keep_best=true
$bench --out "$runs/digits-classsplit" dataset=mnist-digits transfer=class-split keep_best=true
$bench --out "$runs/cifar-colour" $cifar train_size=4000 iterations=2048 transfer=colour
$bench --out "$runs/cifar-classsplit" $cifar train_size=4000 iterations=2048 transfer=class-split
$bench --out "$runs/cifar-colour-10k" $cifar iterations=8192 transfer=colour

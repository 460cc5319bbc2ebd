#!/usr/bin/env bash
# The LeNet-300-100 / Fashion-MNIST runs behind the README's IMP and instability tables,
# at the paper's LeNet protocol (24K iterations, batch 60, Adam 1.2e-3, output layer not
# pruned; lenet_mnist.gin):
#   1. IMP to 3.5% (15 levels) at k=0, with random pruning and random reinit at levels 3..15;
#   2. IMP to 3.5% at k=500, whose level 0 is checkpointed at 100, 500 and 2000 and serves
#      as the parent of the unpruned analyses;
#   3. instability of the unpruned network at k = 0, 100, 500, 2000;
#   4. instability of the 3.5% IMP subnetworks at k = 0 and k = 500.
# Chain 1 runs beside chains 2-4, one thread each, so both cores are busy. Finished steps
# are skipped, so the script resumes. Usage: experiments/lenet_fmnist_lmc.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs}
py=.venv/bin/python
# Uncompiled (RunOptions.jit_compile = False), as these runs were made before XLA became
# LeNet's default: the README's numbers are this script's, to the last bit.
cfg="--gin_file=lenet_fashion_mnist.gin --threads=1 --gin_bindings=RunOptions.jit_compile=False"
begin=$(date +%s)
mkdir -p "$out"

imp_k0() {
  $py -m lmc_tf.imp $cfg --model_dir="$out/imp_lenet_fmnist" --levels=15 --rewind=0it \
    --baselines=random_pruning,random_reinit --baseline_levels=3,6,9,12,15
  $py -m lmc_tf.instability $cfg --model_dir="$out/lmc_imp_level15_k0" --rewind=0it \
    --mask="$out/imp_lenet_fmnist/level_15/mask.npz"
}
imp_k0 > "$out/imp_k0_chain.log" 2>&1 &
chain=$!

$py -m lmc_tf.imp $cfg --gin_bindings="RunOptions.checkpoint_at = ('100it', '500it', '2000it')" \
  --model_dir="$out/imp_lenet_fmnist_k500" --levels=0 --rewind=500it
for k in 0 100 500 2000; do
  $py -m lmc_tf.instability $cfg --model_dir="$out/lmc_dense_k$k" --rewind=${k}it \
    --parent="$out/imp_lenet_fmnist_k500/level_00"
done
$py -m lmc_tf.imp $cfg --gin_bindings="RunOptions.checkpoint_at = ('100it', '500it', '2000it')" \
  --model_dir="$out/imp_lenet_fmnist_k500" --levels=15 --rewind=500it
$py -m lmc_tf.instability $cfg --model_dir="$out/lmc_imp_level15_k500" --rewind=500it \
  --mask="$out/imp_lenet_fmnist_k500/level_15/mask.npz" --parent="$out/imp_lenet_fmnist_k500/level_00"
wait $chain

$py -m lmc_tf.tables "$out"/lmc_dense_k{0,100,500,2000} "$out"/lmc_imp_level15_k{0,500}
echo "wall time of this invocation: $(( $(date +%s) - begin )) s"

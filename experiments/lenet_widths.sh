#!/usr/bin/env bash
# LeNet at widths 2x and 4x (hidden 600-200 and 1200-400) on Fashion-MNIST, the paper's LeNet
# protocol, behind the README's "Instability modulo permutation" width table: the unpruned
# instability analysis at k=0 and k=500, each also weight-matched, activation-matched and
# REPAIRed (the 1x rows are the lmc_dense_k0 / lmc_dense_k500 analyses of lenet_fmnist_lmc.sh,
# aligned after the fact with `python -m lmc_tf.align`). One chain per width, a thread each,
# so both cores are busy; finished analyses are skipped, so the script resumes.
# Usage: experiments/lenet_widths.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs}
py=.venv/bin/python
begin=$(date +%s)
mkdir -p "$out"

width_chain() {  # $1: hidden sizes, e.g. 600_200
  for k in 0 500; do
    # Uncompiled, as these runs were made before XLA became LeNet's default.
    $py -m lmc_tf.instability --gin_file=lenet_fashion_mnist.gin --threads=1 \
      --gin_bindings="RunOptions.jit_compile = False" \
      --gin_bindings="ModelConfig.name = 'lenet_$1'" \
      --gin_bindings="InterpolationConfig.align = ('weights', 'activations')" \
      --gin_bindings="InterpolationConfig.repair = True" \
      --model_dir="$out/lmc_lenet_$1_k$k" --rewind=${k}it
  done
}
width_chain 600_200 > "$out/lenet_600_200_chain.log" 2>&1 &
chain=$!
width_chain 1200_400 > "$out/lenet_1200_400_chain.log" 2>&1
wait $chain
echo "wall time of this invocation: $(( $(date +%s) - begin )) s"

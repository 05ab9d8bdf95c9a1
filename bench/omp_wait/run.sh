#!/bin/bash
# Which OpenMP wait setting and thread count, idle and loaded: Lite0 bs1, Lite0 bs32, simple_cnn train step.
P=${PYTHON:-python}; cd "$(dirname "$0")"
run_all() {
  for cfg in "2 default" "1 default" "2 spin10000" "2 spin1000" "2 passive"; do
    set -- $cfg; t=$1; w=$2
    case $w in default) E="";; spin10000) E="GOMP_SPINCOUNT=10000";; spin1000) E="GOMP_SPINCOUNT=1000";; passive) E="OMP_WAIT_POLICY=PASSIVE";; esac
    for args in "efficientnet_lite0 1 224 40" "efficientnet_lite0 32 224 6" "simple_cnn_train 128 28 60"; do
      echo -n "$1 [$w] "; env $E $P lat.py $t $args
    done
  done
}
echo "== IDLE $(uptime)"; run_all
$P load.py 600 & LOAD=$!; sleep 8
echo "== LOADED $(uptime)"; run_all
kill $LOAD; echo "== END $(uptime)"

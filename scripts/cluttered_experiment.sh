#!/usr/bin/env bash
# The whole cluttered-fashion-mnist comparison (docs/cluttered.md), resumable: every training run
# checkpoints after each epoch under runs/, and a model already exported is not trained again.
#   scripts/cluttered_experiment.sh             # AgileNN and the baselines side by side (one core each),
#                                               # then measure every scheme and write the reports
#   scripts/cluttered_experiment.sh agilenn     # only one part: agilenn | baselines | measure
# Needs the train extra (torch). Hours measured on a 2-core machine are in docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
AGILENN=${AGILENN:-.venv/bin/agilenn}
BUNDLE=bundles/cluttered-fashion-mnist
BASELINES=bundles/cluttered-fashion-mnist-baselines
MEASURED=$BASELINES/measured.json
LOGS=${LOGS:-runs/logs}
mkdir -p "$LOGS"

agilenn() {
  [[ -f $BUNDLE/manifest.json ]] && { echo "== agilenn: exported already"; return; }
  echo "== agilenn $(date +%T)"
  "$AGILENN" partition --config configs/cluttered_fashion_mnist.yaml --out "$BUNDLE" --quiet
}

baselines() {
  # smallest first; each runs on one thread
  for name in local-0.4m local-2m local-5m local-21m deepcod-c16-l4; do
    [[ -f $BASELINES/$name/baseline.json || -f $BASELINES/$name/manifest.json ]] && {
      echo "== $name: exported already"; continue; }
    echo "== $name $(date +%T)"
    "$PY" -m partitioner.baselines train --config "configs/cluttered-baselines/$name.yaml" \
        --out "$BASELINES/$name" --run-dir "runs/baselines/$name"
  done
}

simdata() {
  "$PY" -m partitioner.simdata --agilenn "$BUNDLE" --baselines "$BASELINES" --out "$MEASURED" \
      --image-codecs --export-splits "$@"
}

measure() {
  # The layer split is exported at the cut the simulator chooses for stm32f746-216mhz over
  # wifi-6mbps, which needs the measured cuts: a first measurement chooses it when none is here.
  [[ -f $MEASURED ]] || simdata
  cut=$("$PY" -m simulation.chosen_cut "$MEASURED" stm32f746-216mhz wifi-6mbps)
  simdata --export-cut "$cut"
  chosen=$("$PY" -m simulation.chosen_cut "$MEASURED" stm32f746-216mhz wifi-6mbps)
  [[ $chosen == "$cut" ]] || echo "re-measured, the simulator chooses $chosen; the layer split is at $cut" >&2
  mkdir -p reports
  for link in wifi-6mbps ble-270kbps; do
    "$AGILENN" simulate --workload cluttered-fashion-mnist --device stm32f746-216mhz --link "$link" --json \
        > "reports/cluttered-simulate-stm32f746-216mhz-$link.json"
  done
  "$AGILENN" simulate sweep --workload cluttered-fashion-mnist --device stm32f746-216mhz \
      --links ble-270kbps,wifi-2mbps,wifi-6mbps,lte --report reports/cluttered-stm32f746-216mhz \
      > reports/cluttered-simulate-stm32f746-216mhz.txt
  "$AGILENN" evaluate "$BUNDLE" --json > reports/cluttered-evaluate.json
}

case "${1:-all}" in
  agilenn) agilenn ;;
  baselines) baselines ;;
  measure) measure ;;
  all)
    agilenn > "$LOGS/cluttered-agilenn.log" 2>&1 &
    training=$!
    baselines 2>&1 | tee "$LOGS/cluttered-baselines.log"
    wait "$training" || { echo "AgileNN training failed: see $LOGS/cluttered-agilenn.log" >&2; exit 1; }
    measure ;;
  *) echo "usage: $0 [all|agilenn|baselines|measure]" >&2; exit 2 ;;
esac

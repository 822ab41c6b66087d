#!/usr/bin/env bash
# Regenerate the simulation's measured numbers and reports from bundles/fashion-mnist.
#   scripts/simulate_all.sh            # measure, calibrate the host, write reports (+ emulate as root)
#   TRAIN=1 scripts/simulate_all.sh    # first train and export every baseline in configs/baselines/
#                                      # and the AgileNN variants in configs/variants/
#   REFRESH=1 scripts/simulate_all.sh  # after retraining the bundle only: measure it again in the
#                                      # measured file (baselines, variants, cuts and the host profile kept)
# Needs the train extra (torch) for the measuring step; run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
AGILENN=${AGILENN:-.venv/bin/agilenn}
BUNDLE=${BUNDLE:-bundles/fashion-mnist}
if [[ "${TRAIN:-0}" == 1 ]]; then
  for config in configs/baselines/*.yaml; do
    "$PY" -m partitioner.baselines train --config "$config" --out "bundles/baselines/$(basename "$config" .yaml)"
  done
  PYTHON="$PY" scripts/train_variants.sh
fi
VARIANTS=()
[[ -d bundles/variants ]] && VARIANTS=(--variants bundles/variants)
MEASURED=bundles/baselines/measured.json
chosen_cut() { "$PY" -m simulation.chosen_cut "$@"; }
# The layer split is exported at the cut chosen for stm32f746-216mhz over wifi-6mbps, read from the
# measured file already here (extractor.3 in the committed one); EXPORT_CUT=NAME overrides it.
EXPORT_CUT=${EXPORT_CUT:-}
if [[ -z "$EXPORT_CUT" && -f "$MEASURED" ]]; then
  EXPORT_CUT=$(chosen_cut "$MEASURED" stm32f746-216mhz wifi-6mbps)
fi
EXPORT=(--export-splits)
[[ -n "$EXPORT_CUT" ]] && EXPORT+=(--export-cut "$EXPORT_CUT")
if [[ "${REFRESH:-0}" == 1 ]]; then
  "$PY" -m partitioner.simdata --agilenn "$BUNDLE" --out "$MEASURED" --refresh-agilenn
else
  "$PY" -m partitioner.simdata --agilenn "$BUNDLE" --baselines bundles/baselines \
      --out "$MEASURED" "${EXPORT[@]}" ${VARIANTS[@]+"${VARIANTS[@]}"}
fi
CHOSEN=$(chosen_cut "$MEASURED" stm32f746-216mhz wifi-6mbps)
if [[ "$CHOSEN" != "$EXPORT_CUT" ]]; then
  echo "the re-measured file makes the simulator choose $CHOSEN for stm32f746-216mhz over wifi-6mbps;" \
       "the layer split was exported at ${EXPORT_CUT:-no cut} (EXPORT_CUT=$CHOSEN exports it there)" >&2
fi
# real-time priority where allowed: other tasks on the machine then disturb the timings less
RT=()
[[ $(id -u) == 0 ]] && RT=(chrt -f 50)
if [[ "${REFRESH:-0}" != 1 ]]; then
  ${RT[@]+"${RT[@]}"} "$AGILENN" simulate calibrate --write simulation/profiles/devices/host.yaml > /dev/null
fi
mkdir -p reports
for link in wifi-6mbps ble-270kbps; do
  "$AGILENN" simulate --device stm32f746-216mhz --link "$link" --json > "reports/simulate-stm32f746-216mhz-$link.json"
done
"$AGILENN" simulate sweep --device stm32f746-216mhz --links ble-270kbps,wifi-2mbps,wifi-6mbps,lte \
    --report reports/simulate-stm32f746-216mhz > reports/simulate-stm32f746-216mhz.txt
"$AGILENN" simulate recommend --device esp32-s3 --link ble-270kbps --min-accuracy 0.88 \
    > reports/recommend-esp32-s3-ble.txt || true
if [[ $(id -u) == 0 ]]; then
  "$AGILENN" simulate emulate --bundle "$BUNDLE" --links wifi-6mbps,ble-270kbps --count 100 --json > reports/emulate.json
else
  echo "not root: skipping the emulated links (agilenn simulate emulate needs network namespaces and tc)"
fi

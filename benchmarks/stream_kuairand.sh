#!/usr/bin/env bash
# The streaming loop on KuaiRand: a model trained on 04-25..05-04, the valid days
# 05-05..05-06 replayed through the server and streamed into it, judged on the test days.
#   bash benchmarks/stream_kuairand.sh [WORKDIR] [PREPARED]   (about 6 minutes on 2 cores)
# Prints the replay's figures, the loop's decisions, and one JSON line of test AUCs.
set -euo pipefail
W=${1:-/tmp/infnet-stream-kuairand}
D=${2:-data/kuairand}
B=.venv/bin
PORT=${PORT:-8765}
export OMP_NUM_THREADS=1 INFNET_ADMIN_TOKEN=stream-bench
mkdir -p "$W"
[ -f "$D/schema.json" ] || $B/infnet prepare kuairand --data-dir "${INFNET_DATA_DIR:-../shared/data/kuairand-pure}" --out "$D"
[ -f "$W/run/best.pt" ] || $B/infnet train --data "$D" --model infnet --out "$W/run" --set epochs=1 --set batch_size=1024
[ -d "$W/models/base" ] || $B/infnet export --run "$W/run" --out "$W/models/base"
$B/python - "$D" "$W" <<'PY'
import sys
from infnet.data.schema import Schema
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import open_store
data, work = sys.argv[1:]
as_of = Schema.load(f"{data}/schema.json").split("valid").time_min  # 05-05 00:00 UTC+8
open_store(f"{work}/features.sqlite").write(snapshot_from_prepared(data, as_of=as_of))
PY
rm -rf "$W/loop" "$W"/events.sqlite*
printf 'model: %s\nstore: %s\nrequest_log: null\nevent_log: %s\nreload_root: %s\n' \
  "$W/models/base" "$W/features.sqlite" "$W/events.sqlite" "$W" > "$W/server.yaml"
$B/infnet serve --config "$W/server.yaml" --port "$PORT" > "$W/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 1; done
$B/infnet stream replay --data "$D" --server "http://127.0.0.1:$PORT" --from 2022-05-05 --to 2022-05-07
sleep 2  # the server's impression writer flushes
printf 'margin: 1.0\nwindow: 5000\n' > "$W/publisher.yaml"
time $B/infnet stream run --events "$W/events.sqlite" --start "$W/run" --serving "$W/models/base" \
  --out "$W/loop" --server "http://127.0.0.1:$PORT" --publisher-config "$W/publisher.yaml" \
  --batch-size 1024 --drain
curl -s "http://127.0.0.1:$PORT/readyz"; echo
$B/python - "$D" "$W" <<'PY'
import json, sys
from infnet.data.loader import PreparedDataset
from infnet.models.checkpoint import load_model
from infnet.training.evaluation import evaluate_split
data, work = sys.argv[1:]
d = PreparedDataset(data)
out = {}
for name, path in (("frozen", f"{work}/run/best.pt"), ("streamed", f"{work}/loop/trainer/state.pt")):
    r = evaluate_split(load_model(path, d.schema)[0], d, "test")
    out[name] = {"mtl_auc": round(r["mtl_auc"], 4)} | {t: round(r[t]["auc"], 4) for t in d.schema.task_names}
print(json.dumps({"benchmark": "stream_kuairand", "test_auc": out}))
PY

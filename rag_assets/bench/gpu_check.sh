#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, in under 8 minutes, the figures the README's GPU
# benchmark needs, from the Django docs (6.1.0 -> the current snapshot, RST `.txt` pages):
#   - the bare model's tokens/s on the pipeline's own chunks (bare_encode, bare_embed, and the
#     other reduced-precision path), with the cosine agreement of fp16 with fp32;
#   - the cold, warm, incremental and naive stages;
#   - the embedding step's share of cold (from the bench's own Dagster instance);
#   - the peak GPU memory: torch's per stage, and nvidia-smi's for the whole device.
#
#   bash rag_assets/bench/gpu_check.sh [OUT_DIR]      # from anywhere; default OUT_DIR gpu-check/
#
# Needs: rag_assets installed with a CUDA build of torch (`pip install -e '.[test]'`), nvidia-smi,
# and the corpora in ../shared/corpora (CORPORA=... to point elsewhere). Writes OUT_DIR/bench.json,
# OUT_DIR/bench.txt (the table), OUT_DIR/summary.txt and OUT_DIR/nvidia-smi.csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
CORPORA=${CORPORA:-../shared/corpora}
OUT=$(mkdir -p "${1:-gpu-check}" && cd "${1:-gpu-check}" && pwd)
WORK=$(mktemp -d /tmp/rag-gpu-check.XXXXXX)
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}  # the bench's share of the 8 minutes
# A dry run of the script itself on a CPU, on small tarballs: DEVICE=cpu CORPUS=a.tar.gz UPDATE=b.tar.gz
DEVICE=${DEVICE:-cuda}
CORPUS=${CORPUS:-$CORPORA/django-docs-6.1.0.tar.gz}
UPDATE=${UPDATE:-$CORPORA/django-docs.tar.gz}

[ "$DEVICE" = cpu ] || python - <<'EOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit(f"gpu_check: no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda})")
print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
# Device memory in use, every 200 ms, for as long as the bench runs.
: > "$OUT/nvidia-smi.csv"
SAMPLER=
if [ "$DEVICE" != cpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/nvidia-smi.csv" &
    SAMPLER=$!
fi
trap '[ -z "$SAMPLER" ] || kill "$SAMPLER" 2>/dev/null || true' EXIT

started=$(date +%s)
timeout "$BUDGET_S" rag-assets bench \
    --corpus "$CORPUS" --update "$UPDATE" \
    --include 'docs/**/*.txt' --device "$DEVICE" --fp32-reference \
    --workdir "$WORK" --out "$OUT/bench.json" | tee "$OUT/bench.txt"
[ -z "$SAMPLER" ] || kill "$SAMPLER" 2>/dev/null || true

# The embedding step's share of cold: the first ingest run on the bench's instance is cold.
python - "$WORK/dagster_home" "$OUT" "$(( $(date +%s) - started ))" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

import dagster as dg

home, out, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
report = json.loads((out / "bench.json").read_text())
stages, env = report["stages"], report["env"]
instance = dg.DagsterInstance.from_config(str(home))
cold_run = min(instance.get_runs(), key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(cold_run.run_id)}
embed = steps.get("embeddings", 0.0)
samples = [int(x) for x in (out / "nvidia-smi.csv").read_text().split() if x.strip().isdigit()]
print(f"gpu: {env['gpu'] or env['cpu']}, precision {env['precision']}, torch {env['versions']['torch']}; bench took {elapsed} s")
for name in ("bare_encode", "bare_embed", "bare_embed_autocast", "bare_embed_cast", "cold", "warm", "incremental", "naive"):
    if name in stages:
        row = stages[name]
        print(f"{name:<20} {row['wall_s']:>9.2f} s {row['tokens_per_s']:>12,.0f} tokens/s  gpu peak {row.get('gpu_peak_mb', 0):>8,.0f} MiB")
print(f"embedding step: {embed:.2f} s of cold's {stages['cold']['wall_s']:.2f} s ({embed / stages['cold']['wall_s']:.1%}); steps: "
      + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])))
print(f"cold tokens/s vs bare_encode: {stages['cold']['tokens_per_s'] / stages['bare_encode']['tokens_per_s']:.3f} (target >= 0.8)")
fp32 = stages.get("bare_encode_fp32", {})
print(f"agreement with fp32: {fp32.get('reduced_precision')} mean {fp32.get('cosine_vs_reduced_mean')}, "
      f"{fp32.get('cosine_vs_other_path_precision')} mean {fp32.get('cosine_vs_other_path_mean')}")
print(f"device memory used (nvidia-smi, whole device): peak {max(samples, default=0):,} MiB")
print("ratios: " + ", ".join(f"{k} = {v}" for k, v in report["ratios"].items()))
EOF
rm -rf "$WORK"

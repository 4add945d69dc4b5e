#!/usr/bin/env bash
# The main job: a sample video through the running platform, as a customer sends it.
# Run by `make demo` after `make up`. It makes (once) a two-minute sample with speech
# (espeak-ng) and four scenes (FFmpeg), creates a demo customer, uploads the video
# through the gateway, submits the job, follows it stage by stage, and prints the
# insights and the cost by stage. Everything it makes lives under the state directory.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="${VI_STATE_DIR:-$REPO_ROOT/.state}"
DEMO_DIR="$STATE_DIR/demo"
GATEWAY="http://127.0.0.1:${VI_GATEWAY_PORT:-8000}"
PY="$REPO_ROOT/.venv/bin/python"
VI="$REPO_ROOT/.venv/bin/vidinsight"
mkdir -p "$DEMO_DIR"

say() { printf 'demo: %s\n' "$*"; }

SCRIPT=(
    "Welcome to the Falcon launch review."
    "The Falcon launch depends on the supplier contracts, and the contracts are almost signed."
    "Maria will send the launch budget to finance by Friday."
    "Next, hiring. We need two more engineers for the mobile team."
    "Peter will interview the engineers next week."
    "Finally, the customer survey. Customers love the new dashboard but want faster exports."
    "Sofia will share the survey results with the product team on Monday."
    "Thank you all. The Falcon launch is on track."
)

make_sample() {
    local video="$DEMO_DIR/sample.mp4"
    [ -s "$video" ] && { printf '%s' "$video"; return 0; }
    local ffmpeg i wavs=() list="$DEMO_DIR/speech.txt"
    ffmpeg="$("$PY" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')"
    : >"$list"
    for i in "${!SCRIPT[@]}"; do
        espeak-ng -s 150 -w "$DEMO_DIR/line$i.wav" "${SCRIPT[$i]}"
        printf "file '%s'\nfile '%s'\n" "$DEMO_DIR/line$i.wav" "$DEMO_DIR/pause.wav" >>"$list"
    done
    "$ffmpeg" -loglevel error -y -f lavfi -i anullsrc=r=22050:cl=mono -t 1.2 "$DEMO_DIR/pause.wav"
    "$ffmpeg" -loglevel error -y -f concat -safe 0 -i "$list" "$DEMO_DIR/speech.wav"
    "$ffmpeg" -loglevel error -y \
        -f lavfi -t 25 -i "testsrc2=size=1280x720:rate=25" \
        -f lavfi -t 25 -i "smptebars=size=1280x720:rate=25" \
        -f lavfi -t 25 -i "mandelbrot=size=1280x720:rate=25" \
        -f lavfi -t 45 -i "life=size=1280x720:rate=25:mold=10:ratio=0.1" \
        -i "$DEMO_DIR/speech.wav" \
        -filter_complex "[0:v]format=yuv420p[a];[1:v]format=yuv420p[b];[2:v]format=yuv420p[c];[3:v]format=yuv420p[d];[a][b][c][d]concat=n=4:v=1:a=0[v]" \
        -map "[v]" -map 4:a -af "apad" -t 120 -c:v libx264 -preset veryfast -crf 28 \
        -c:a aac -b:a 64k -movflags +faststart "$video"
    printf '%s' "$video"
}

json_field() { "$PY" -c "import json,sys; print(json.load(sys.stdin)$1)"; }

say "making the sample video (two minutes, 720p, speech and four scenes)"
VIDEO="$(make_sample)"
say "sample: $VIDEO"

KEY_FILE="$DEMO_DIR/customer.json"
if [ ! -s "$KEY_FILE" ]; then
    "$VI" customers create "demo customer" >"$KEY_FILE"
fi
API_KEY="$(json_field "['api_key']" <"$KEY_FILE")"
AUTH=(-H "Authorization: Bearer $API_KEY")

say "uploading through the gateway"
UPLOAD="$(curl -sf "${AUTH[@]}" -H "Content-Type: video/mp4" --data-binary "@$VIDEO" "$GATEWAY/v1/uploads")"
UPLOAD_ID="$(json_field "['upload_id']" <<<"$UPLOAD")"
JOB="$(curl -sf "${AUTH[@]}" -H "Content-Type: application/json" -d "{\"upload_id\": \"$UPLOAD_ID\"}" "$GATEWAY/v1/jobs")"
JOB_ID="$(json_field "['job_id']" <<<"$JOB")"
say "job $JOB_ID submitted; following it (GET /v1/jobs/$JOB_ID):"

PROGRESS_PY="$(
    cat <<'PY'
import json, sys
v = json.load(sys.stdin)
stages = " ".join(f"{name}:{s['status']}" for name, s in v["stages"].items())
print(f"{v['status']:9} {round(100 * v['progress']):3d}%  {stages}")
PY
)"
STATUS=queued
LAST=""
for _ in $(seq 1 600); do
    VIEW="$(curl -sf "${AUTH[@]}" "$GATEWAY/v1/jobs/$JOB_ID")"
    STATUS="$(json_field "['status']" <<<"$VIEW")"
    LINE="$("$PY" -c "$PROGRESS_PY" <<<"$VIEW")"
    [ "$LINE" != "$LAST" ] && say "  $LINE"
    LAST="$LINE"
    case "$STATUS" in completed | failed | cancelled) break ;; esac
    sleep 1
done

if [ "$STATUS" != completed ]; then
    say "the job ended $STATUS:"
    curl -sf "${AUTH[@]}" "$GATEWAY/v1/jobs/$JOB_ID" | "$PY" -m json.tool
    exit 1
fi

curl -sf "${AUTH[@]}" "$GATEWAY/v1/jobs/$JOB_ID/insights" >"$DEMO_DIR/insights.json"
curl -sf "${AUTH[@]}" "$GATEWAY/v1/jobs/$JOB_ID/captions.vtt" >"$DEMO_DIR/captions.vtt"
curl -sf "${AUTH[@]}" "$GATEWAY/v1/jobs/$JOB_ID/captions.srt" >"$DEMO_DIR/captions.srt"
curl -sf "${AUTH[@]}" "$GATEWAY/v1/jobs/$JOB_ID/costs" >"$DEMO_DIR/costs.json"
"$PY" - "$DEMO_DIR" <<'PYEOF'
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
doc = json.loads((folder / "insights.json").read_text())
costs = json.loads((folder / "costs.json").read_text())
print("\n== Summary\n" + str(doc.get("summary", "")))
print("\n== Chapters")
for c in doc.get("chapters", []):
    print(f"  {c['start_seconds']:7.1f}s - {c['end_seconds']:7.1f}s  {c['title']}")
print("\n== Action items")
for a in doc.get("action_items", []):
    due = f" (due {a['due']})" if a.get("due") else ""
    print(f"  {a['owner']}: {a['task']}{due}")
print("\n== Keywords\n  " + ", ".join(doc.get("keywords", [])))
print("\n== Cost by stage (USD)")
for stage, usd in costs.get("by_stage", {}).items():
    print(f"  {stage:12} {usd:.6f}")
print(f"  {'total':12} {costs.get('total_usd', 0):.6f}")
print(f"\nFull JSON: {folder / 'insights.json'}\nCaptions:  {folder / 'captions.vtt'}, {folder / 'captions.srt'}")
print("Keyframes: GET /v1/jobs/<job>/keyframes/<n>.jpg on the gateway")
PYEOF

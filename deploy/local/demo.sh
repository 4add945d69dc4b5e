#!/usr/bin/env bash
# The main job: a sample video through the running platform, as a customer sends it.
# Run by `make demo` after `make up`. It makes (once) a two-minute sample with speech
# (espeak-ng) and four scenes (FFmpeg), creates a demo customer, and submits the video
# through the gateway with `vidinsight submit --wait`, which follows it stage by stage and
# prints the insights and the cost by stage. Everything it makes lives under the state
# directory; the exit code is the submit's (0 completed, 1 failed, 2 not submitted).
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
# The stack's webhook key (services.d/platform.sh), so the new customer gets its secret.
if [ -z "${VI_WEBHOOK_SECRETS_KEY:-}" ] && [ -s "$STATE_DIR/webhook-secrets.key" ]; then
    VI_WEBHOOK_SECRETS_KEY="$(cat "$STATE_DIR/webhook-secrets.key")"
    export VI_WEBHOOK_SECRETS_KEY
fi
if [ ! -s "$KEY_FILE" ]; then
    "$VI" customers create "demo customer" >"$KEY_FILE"
fi
API_KEY="$(json_field "['api_key']" <"$KEY_FILE")"

# The demo submits like any customer, through `vidinsight submit` (cli/submit.py): it
# uploads the file, submits the job, shows each stage's progress from the job's events,
# then prints the summary, chapters, action items, cost by stage and where the results
# are, and saves them under $DEMO_DIR/results. The key goes by environment, not argv
# (argv is visible to every user in ps). Each run is a new job (a key of its own);
# without --idempotency-key a re-run would be answered with the previous job.
say "submitting through the gateway at $GATEWAY"
VI_GATEWAY_URL="$GATEWAY" VI_API_KEY="$API_KEY" "$VI" submit "$VIDEO" --wait \
    --idempotency-key "demo-$(date -u +%Y%m%dT%H%M%SZ)-$$" --output-dir "$DEMO_DIR/results"

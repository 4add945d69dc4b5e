# Prometheus under `make up`, when Debian's `prometheus` package is installed: on
# 127.0.0.1:$VI_PROMETHEUS_PORT (9090), scraping every platform process with
# deploy/prometheus/prometheus.yml and evaluating deploy/prometheus/alerts.yml. Sourced by
# stack.sh (add_service, spawn, DATA_DIR, ETC_DIR). `stack.sh with` (the tests) never
# starts it: tests/deploy/test_prometheus.py runs a Prometheus of its own.
#
# The committed configuration names make up's default ports; the copy Prometheus reads
# follows VI_METRICS_PORT_BASE wherever it was moved, and points
# at the committed rule file, so `stack.sh restart prometheus` picks up edited rules.

: "${VI_PROMETHEUS_PORT:=9090}"
: "${VI_PROMETHEUS_BIN:=/usr/bin/prometheus}"
: "${VI_PROMETHEUS_RETENTION:=7d}"
export VI_PROMETHEUS_PORT
PROMETHEUS_DATA="$DATA_DIR/prometheus"
PROMETHEUS_CONFIG="$ETC_DIR/prometheus/prometheus.yml"
PROMETHEUS_SOURCE="$REPO_ROOT/deploy/prometheus"

if [ "${VI_STACK_PLATFORM:-1}" = 1 ] && [ -x "$VI_PROMETHEUS_BIN" ]; then
    add_service prometheus
fi

# The committed scrape configuration with this stack's ports: 9101..9109 become
# VI_METRICS_PORT_BASE + 0..8 (markers first, so a moved base cannot rewrite a port twice).
render_prometheus_config() {
    local offset script=(-e "s#127\.0\.0\.1:910\([1-9]\)#127.0.0.1:@METRICS\1@#g")
    for offset in 0 1 2 3 4 5 6 7 8; do
        script+=(-e "s#@METRICS$((offset + 1))@#$((VI_METRICS_PORT_BASE + offset))#g")
    done
    script+=(-e "s#^\(  *- \)alerts\.yml\$#\1$PROMETHEUS_SOURCE/alerts.yml#")
    mkdir -p "$(dirname "$PROMETHEUS_CONFIG")"
    sed "${script[@]}" "$PROMETHEUS_SOURCE/prometheus.yml" >"$PROMETHEUS_CONFIG"
}

install_prometheus() {
    mkdir -p "$PROMETHEUS_DATA"
    render_prometheus_config
}
start_prometheus() {
    spawn prometheus "$PROMETHEUS_DATA" "$VI_PROMETHEUS_BIN" \
        --config.file="$PROMETHEUS_CONFIG" \
        --storage.tsdb.path="$PROMETHEUS_DATA" \
        --storage.tsdb.retention.time="$VI_PROMETHEUS_RETENTION" \
        --web.listen-address="127.0.0.1:$VI_PROMETHEUS_PORT"
}
health_prometheus() {
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$VI_PROMETHEUS_PORT/-/ready" 2>/dev/null
}
port_vars_prometheus() { echo VI_PROMETHEUS_PORT; }
start_timeout_prometheus() { echo 60; }

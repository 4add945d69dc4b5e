# The platform's own processes under `make up`: one worker per built stage (a stage is
# built once streams/<stage>.py exists and is registered in streams/stages.py), plus the
# cost aggregator and the gateway once they exist. Sourced by stack.sh, which defines
# add_service, spawn and port_in_use. `stack.sh with` (used by `make test`) starts the
# infrastructure only, so tests never race a pipeline worker for their messages.
#
# Each worker serves Prometheus metrics on its own port: VI_METRICS_PORT_BASE (9101) + its
# position below, so a scrape configuration can name them.

: "${VI_METRICS_PORT_BASE:=9101}"
: "${VI_STACK_PLATFORM:=1}" # 0: the infrastructure alone (PostgreSQL, Kafka, the registry)
# The platform's processes talk to this stack, wherever its ports were moved.
: "${VI_KAFKA_BOOTSTRAP:=127.0.0.1:$VI_KAFKA_PORT}"
: "${VI_REGISTRY_URL:=http://127.0.0.1:$VI_REGISTRY_PORT/apis/ccompat/v7}"
: "${VI_DATABASE_URL:=postgresql://vidinsight:vidinsight@127.0.0.1:$VI_POSTGRES_PORT/vidinsight}"
export VI_KAFKA_BOOTSTRAP VI_REGISTRY_URL VI_DATABASE_URL
VI_BIN="$REPO_ROOT/.venv/bin/vidinsight"
PLATFORM_STAGES=(ingest preprocess transcribe analyse synthesise notify)

stage_built() { [ -f "$REPO_ROOT/streams/$1.py" ]; }

# Before the first platform process starts: the schema and the topics it needs, once.
PLATFORM_PREPARED=0
prepare_platform() {
    [ "$PLATFORM_PREPARED" = 1 ] && return 0
    export_webhook_secrets_key
    "$VI_BIN" db migrate >>"$LOG_DIR/platform-setup.log" 2>&1 || die "db migrate failed: see $LOG_DIR/platform-setup.log"
    "$VI_BIN" topics apply >>"$LOG_DIR/platform-setup.log" 2>&1 || die "topics apply failed: see $LOG_DIR/platform-setup.log"
    PLATFORM_PREPARED=1
}

# Each customer's webhook signing secrets derive from VI_WEBHOOK_SECRETS_KEY (decision
# 0010). Unless the environment gives one, the local stack makes its own on first use and
# keeps it in the state folder, readable by its owner alone, so webhooks are signed under
# `make up` as in a cluster (where it is a Secret).
WEBHOOK_KEY_FILE="$STATE_DIR/webhook-secrets.key"
export_webhook_secrets_key() {
    if [ -z "${VI_WEBHOOK_SECRETS_KEY:-}" ]; then
        [ -s "$WEBHOOK_KEY_FILE" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$WEBHOOK_KEY_FILE")
        VI_WEBHOOK_SECRETS_KEY="$(cat "$WEBHOOK_KEY_FILE")"
    fi
    export VI_WEBHOOK_SECRETS_KEY
}

# define_worker STAGE PORT: the service worker-STAGE, running `vidinsight worker STAGE`.
define_worker() {
    local stage="$1" port="$2" fn="worker_$1"
    add_service "worker-$stage"
    eval "start_${fn}() { VI_METRICS_PORT=$port spawn worker-$stage \"\$REPO_ROOT\" \"\$VI_BIN\" worker $stage; }"
    eval "health_${fn}() { port_in_use $port; }"
    eval "start_timeout_${fn}() { echo 60; }"
    eval "install_${fn}() { prepare_platform; }"
}

platform_index=0
for platform_stage in "${PLATFORM_STAGES[@]}"; do
    if [ "$VI_STACK_PLATFORM" = 1 ] && stage_built "$platform_stage"; then
        define_worker "$platform_stage" $((VI_METRICS_PORT_BASE + platform_index))
    fi
    platform_index=$((platform_index + 1))
done
unset platform_stage platform_index

# The cost aggregator (Faust): vi.costs into the ledger and spend tables.
if [ "$VI_STACK_PLATFORM" = 1 ] && [ -f "$REPO_ROOT/streams/costs/__init__.py" ]; then
    add_service costs
    costs_port=$((VI_METRICS_PORT_BASE + ${#PLATFORM_STAGES[@]}))
    eval "start_costs() { VI_METRICS_PORT=$costs_port spawn costs \"\$REPO_ROOT\" \"\$VI_BIN\" costs-aggregator; }"
    eval "health_costs() { port_in_use $costs_port; }"
    start_timeout_costs() { echo 60; }
    install_costs() { prepare_platform; }
    unset costs_port
fi

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
    "$VI_BIN" db migrate >>"$LOG_DIR/platform-setup.log" 2>&1 || die "db migrate failed: see $LOG_DIR/platform-setup.log"
    "$VI_BIN" topics apply >>"$LOG_DIR/platform-setup.log" 2>&1 || die "topics apply failed: see $LOG_DIR/platform-setup.log"
    PLATFORM_PREPARED=1
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

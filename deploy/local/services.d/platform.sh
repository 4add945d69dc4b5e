# The platform's own processes under `make up`: one worker per built stage (a stage is
# built once streams/<stage>.py exists and is registered in streams/stages.py), plus the
# cost aggregator and the gateway once they exist. Sourced by stack.sh, which defines
# add_service, spawn and port_in_use. `stack.sh with` (used by `make test`) starts the
# infrastructure only, so tests never race a pipeline worker for their messages.
#
# Each process serves Prometheus metrics on its own port, so a scrape configuration can
# name them: VI_METRICS_PORT_BASE (9101) + the stage's position below for the workers
# (+0..+6), +7 for the cost aggregator, +8 for the gateway (gateway.sh).
#
# VI_STAGE_REPLICAS (e.g. preprocess=2,transcribe=2; default: one worker per stage) runs
# more workers of a stage, in its consumer group: worker-STAGE-2 ... worker-STAGE-N, with
# metrics ports after the gateway's (+9, +10 ...) in the order of the stages below, so
# the ports above never move. VI_WORKER_KAFKA_BOOTSTRAP gives the stage workers (not the
# gateway, the aggregator or the setup) another bootstrap, such as a fault-injecting proxy.

: "${VI_METRICS_PORT_BASE:=9101}"
: "${VI_STACK_PLATFORM:=1}" # 0: the infrastructure alone (PostgreSQL, Kafka, the registry)
: "${VI_STAGE_REPLICAS:=}"
# The platform's processes talk to this stack, wherever its ports were moved.
: "${VI_KAFKA_BOOTSTRAP:=127.0.0.1:$VI_KAFKA_PORT}"
: "${VI_REGISTRY_URL:=http://127.0.0.1:$VI_REGISTRY_PORT/apis/ccompat/v7}"
: "${VI_DATABASE_URL:=postgresql://vidinsight:vidinsight@127.0.0.1:$VI_POSTGRES_PORT/vidinsight}"
export VI_KAFKA_BOOTSTRAP VI_REGISTRY_URL VI_DATABASE_URL
# shellcheck disable=SC2034 # read by the start functions define_worker writes with eval
WORKER_KAFKA_BOOTSTRAP="${VI_WORKER_KAFKA_BOOTSTRAP:-$VI_KAFKA_BOOTSTRAP}"
VI_BIN="$REPO_ROOT/.venv/bin/vidinsight"
PLATFORM_STAGES=(ingest preprocess scenes transcribe analyse synthesise notify)
COSTS_METRICS_PORT=$((VI_METRICS_PORT_BASE + ${#PLATFORM_STAGES[@]}))
GATEWAY_METRICS_PORT=$((COSTS_METRICS_PORT + 1))

stage_built() { [ -f "$REPO_ROOT/streams/$1.py" ]; }

# Before the first platform process starts: the schema and the topics it needs, once.
# Once they are in place for this checkout's migrations, catalogue and schemas (a
# fingerprint kept in the run folder until `down`), starting or restarting one process
# skips them: a worker restarted while the registry is down must not wait for it here.
PLATFORM_PREPARED=0
PLATFORM_PREPARED_FILE="$RUN_DIR/platform.prepared"
platform_fingerprint() {
    cat "$REPO_ROOT"/sinks/migrations/*.sql "$REPO_ROOT/topics/catalogue.py" "$REPO_ROOT"/schemas/*.avsc |
        sha256sum | cut -d' ' -f1
}
prepare_platform() {
    [ "$PLATFORM_PREPARED" = 1 ] && return 0
    export_webhook_secrets_key
    local fingerprint
    fingerprint="$(platform_fingerprint)"
    if [ "$(cat "$PLATFORM_PREPARED_FILE" 2>/dev/null)" != "$fingerprint" ]; then
        "$VI_BIN" db migrate >>"$LOG_DIR/platform-setup.log" 2>&1 || die "db migrate failed: see $LOG_DIR/platform-setup.log"
        "$VI_BIN" topics apply >>"$LOG_DIR/platform-setup.log" 2>&1 || die "topics apply failed: see $LOG_DIR/platform-setup.log"
        printf '%s\n' "$fingerprint" >"$PLATFORM_PREPARED_FILE"
    fi
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

# VI_STAGE_REPLICAS as STAGE_REPLICAS[stage]=count; a wrong entry stops stack.sh at once.
declare -A STAGE_REPLICAS=()
read_stage_replicas() {
    local entry count
    local -a entries
    IFS=, read -r -a entries <<<"${VI_STAGE_REPLICAS// /}"
    for entry in "${entries[@]}"; do
        [ -n "$entry" ] || continue
        count="${entry#*=}"
        if [[ "$entry" != *=* || ! "$count" =~ ^[1-9][0-9]*$ ]]; then
            die "VI_STAGE_REPLICAS: '$entry' is not STAGE=COUNT with COUNT 1 or more (e.g. preprocess=2,transcribe=2)"
        fi
        [[ " ${PLATFORM_STAGES[*]} " == *" ${entry%%=*} "* ]] ||
            die "VI_STAGE_REPLICAS: no stage '${entry%%=*}' (stages: ${PLATFORM_STAGES[*]})"
        STAGE_REPLICAS[${entry%%=*}]="$count"
    done
}

# define_worker SERVICE STAGE PORT: the service SERVICE, running `vidinsight worker STAGE`
# with its metrics on PORT; every worker of a stage joins the stage's consumer group.
define_worker() {
    local svc="$1" stage="$2" port="$3" fn="${1//-/_}"
    add_service "$svc"
    eval "start_${fn}() { VI_METRICS_PORT=$port VI_KAFKA_BOOTSTRAP=\"\$WORKER_KAFKA_BOOTSTRAP\" spawn $svc \"\$REPO_ROOT\" \"\$VI_BIN\" worker $stage; }"
    eval "health_${fn}() { port_in_use $port; }"
    eval "start_timeout_${fn}() { echo 60; }"
    eval "install_${fn}() { prepare_platform; }"
}

# Every stage's first worker at base + its position, then the extra replicas after the
# gateway's port.
define_workers() {
    local index=0 replica_port=$((GATEWAY_METRICS_PORT + 1)) stage replica
    read_stage_replicas
    for stage in "${PLATFORM_STAGES[@]}"; do
        if stage_built "$stage"; then
            define_worker "worker-$stage" "$stage" $((VI_METRICS_PORT_BASE + index))
            for ((replica = 2; replica <= ${STAGE_REPLICAS[$stage]:-1}; replica++)); do
                define_worker "worker-$stage-$replica" "$stage" "$replica_port"
                replica_port=$((replica_port + 1))
            done
        fi
        index=$((index + 1))
    done
}

if [ "$VI_STACK_PLATFORM" = 1 ]; then
    define_workers
fi

# The cost aggregator (Faust): vi.costs into the ledger and spend tables.
if [ "$VI_STACK_PLATFORM" = 1 ] && [ -f "$REPO_ROOT/streams/costs/__init__.py" ]; then
    add_service costs
    start_costs() { VI_METRICS_PORT=$COSTS_METRICS_PORT spawn costs "$REPO_ROOT" "$VI_BIN" costs-aggregator; }
    health_costs() { port_in_use "$COSTS_METRICS_PORT"; }
    start_timeout_costs() { echo 60; }
    install_costs() { prepare_platform; }
fi

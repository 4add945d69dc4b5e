#!/usr/bin/env bash
# The local single-machine stack: PostgreSQL 15, Kafka 4.x (KRaft) and Apicurio Registry.
#
#   stack.sh up                  install what is missing, start every service, wait until healthy
#   stack.sh down                stop every service (by pid file: TERM, wait, then KILL)
#   stack.sh status [SERVICE]    one line per service; exit 1 if any is not healthy
#   stack.sh logs [SERVICE] [-f] the last lines of each log (or of one; -f follows)
#   stack.sh start|stop|restart SERVICE
#   stack.sh with COMMAND...     start what is not running, run COMMAND, then stop only what
#                                this run started; exits with COMMAND's code (make test uses it)
#
# Every service runs under supervise.sh (beside this script): a process that exits or is
# killed is started again after a backoff (1 s, 2 s, 4 s ... 30 s), and `status` shows how
# often. `stop`/`down` end the supervisor and its process together; nothing is restarted.
#
# Services start in order (postgres, kafka, registry, s3) and stop in reverse. Each service is a
# set of functions named after it:
#   start_<svc>          launch the process through `spawn <svc> <workdir> <command...>`
#   health_<svc>         exit 0 when it serves (default: the process is alive)
#   install_<svc>        optional: fetch or initialise what it needs before starting
#   after_start_<svc>    optional: idempotent setup once healthy (databases, registry config)
#   port_vars_<svc>      optional: names of the env vars holding the ports it listens on
#   stop_signal_<svc>    optional: the signal that asks it to stop (default TERM)
#   start_timeout_<svc>  optional: seconds to wait for health (default 120)
# More services (stage workers, the gateway) go in deploy/local/services.d/*.sh, which this
# script sources; each file calls `add_service NAME` and defines the functions above (a dash
# in NAME is an underscore in the function names).
#
# Everything lives under the state directory (VI_STATE_DIR, default <repo>/.state):
#   run/<svc>.pid  run/<svc>.child  run/<svc>.restarts  logs/<svc>.log
#   data/postgres  data/kafka  etc/kafka  cache/m2  opt/kafka/libs  opt/apicurio
# except what VI_OPT_DIR (the installed jars) and VI_MAVEN_REPO (the m2 cache) move: a
# second, private stack (its own VI_STATE_DIR and ports) can share the first one's installs.
# Nothing a stack runs writes to opt; stacks sharing it install into it one at a time.
#
# VI_KAFKA_PROXIED_PORT and VI_KAFKA_PROXY_PORT (both or neither) give the broker a second
# client listener, on the first port, that advertises 127.0.0.1 and the second, where a TCP
# proxy (the fault tests') forwards to the first: a client bootstrapped at the proxy keeps
# talking through it. The PLAINTEXT listener on VI_KAFKA_PORT is unchanged.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

STATE_DIR="${VI_STATE_DIR:-$REPO_ROOT/.state}"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"
DATA_DIR="$STATE_DIR/data"
CACHE_DIR="$STATE_DIR/cache"
OPT_DIR="${VI_OPT_DIR:-$STATE_DIR/opt}" # installs only: may be shared by several stacks
ETC_DIR="$STATE_DIR/etc"
M2_REPO="${VI_MAVEN_REPO:-$CACHE_DIR/m2}" # Maven local repository (a cache of downloads)

: "${VI_POSTGRES_PORT:=5432}"
: "${VI_KAFKA_PORT:=9092}"
: "${VI_KAFKA_CONTROLLER_PORT:=9093}"
: "${VI_REGISTRY_PORT:=8081}"
: "${VI_S3_PORT:=9000}"
# The local object store's one bucket and its root credentials (a development stack's
# own; the platform reads them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
: "${VI_S3_BUCKET:=vidinsight}"
: "${VI_S3_ACCESS_KEY:=vidinsight-local}"
: "${VI_S3_SECRET_KEY:=vidinsight-local-secret}"
: "${VI_MIN_FREE_GIB:=2}"
: "${VI_STOP_TIMEOUT_SECONDS:=30}"
: "${VI_LOG_ROTATE_MIB:=64}"
: "${VI_POSTGRES_BIN:=/usr/lib/postgresql/15/bin}"
: "${VI_KAFKA_HEAP_OPTS:=-Xms256m -Xmx1g}"
: "${VI_REGISTRY_HEAP_OPTS:=-Xms128m -Xmx768m}"

SERVICES=(postgres kafka registry s3)
# What `with` (the test runner's wrapper) starts: the infrastructure, never the workers.
INFRA_SERVICES=(postgres kafka registry s3)

# ---------------------------------------------------------------------------- messages

say() { printf 'stack: %s\n' "$*"; }
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------------------- the generic runner

add_service() { SERVICES+=("$1"); }

known_service() {
    local svc
    for svc in "${SERVICES[@]}"; do
        [ "$svc" = "$1" ] && return 0
    done
    return 1
}

has_function() { declare -F "$1" >/dev/null; }

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
child_file() { printf '%s/%s.child' "$RUN_DIR" "$1"; }
restarts_file() { printf '%s/%s.restarts' "$RUN_DIR" "$1"; }

SUPERVISOR="$SCRIPT_DIR/supervise.sh"

# The kernel's start time of a live process (field 22 of /proc/PID/stat), to tell our
# process from a later one that reuses its pid. A zombie (state Z) or a process being torn
# down (X) still has its /proc entry but is dead: for it this fails, as for a missing pid.
live_start_time() {
    local stat
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    local -a fields
    read -r -a fields <<<"${stat##*) }"
    case "${fields[0]}" in Z | X) return 1 ;; esac
    printf '%s' "${fields[19]}"
}

# is_process PID START: PID is alive and is the process that started at START.
is_process() { [ -n "$2" ] && [ "$(live_start_time "$1")" = "$2" ]; }

# Print the pid a file of "PID START" names if that process is alive and is the one named.
live_pid_in() {
    local pid started
    [ -f "$1" ] || return 1
    read -r pid started <"$1" || return 1
    [ -n "${pid:-}" ] && is_process "$pid" "${started:-}" || return 1
    printf '%s' "$pid"
}

# The service's own pid: its supervisor (or, in a pid file written before supervision
# existed, the service's process itself), if it is alive and is the one we started.
service_pid() { live_pid_in "$(pid_file "$1")"; }

# The pid of the supervised process while it runs (not during a restart's backoff).
child_pid() { live_pid_in "$(child_file "$1")"; }

# Whether PID is one of our supervise.sh processes (spawn starts it as "$BASH" supervise.sh).
is_supervisor() {
    local -a argv
    { mapfile -d '' -t argv <"/proc/$1/cmdline"; } 2>/dev/null || return 1
    [ "${argv[1]:-}" = "$SUPERVISOR" ]
}

restart_count() { cat "$(restarts_file "$1")" 2>/dev/null || echo 0; }

stop_signal() {
    local svc="$1"
    if has_function "stop_signal_${svc//-/_}"; then
        "stop_signal_${svc//-/_}"
    else
        echo TERM
    fi
}

# spawn SERVICE WORKDIR COMMAND...: run COMMAND under supervise.sh, in a session of its own,
# in the background, with stdout and stderr appended to the service's log; record the
# supervisor's pid and start time (supervise.sh records its child's).
spawn() {
    local svc="$1" workdir="$2"
    shift 2
    local log="$LOG_DIR/$svc.log" signal
    signal="$(stop_signal "$svc")"
    # Keep one previous log once it grows past VI_LOG_ROTATE_MIB.
    if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt $((VI_LOG_ROTATE_MIB * 1024 * 1024)) ]; then
        mv -f "$log" "$log.1"
    fi
    printf '\n=== %s stack.sh: starting %s (supervised): %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$svc" "$*" >>"$log"
    rm -f "$(child_file "$svc")" "$(restarts_file "$svc")"
    # fd 9 is the stack lock: the service must not inherit it.
    (cd "$workdir" && exec setsid "$BASH" "$SUPERVISOR" "$svc" "$RUN_DIR" "$signal" "$@" \
        >>"$log" 2>&1 </dev/null 9>&-) &
    local pid=$!
    local started
    started="$(live_start_time "$pid")" || die "$svc exited at once; see $log"
    printf '%s %s\n' "$pid" "$started" >"$(pid_file "$svc")"
}

service_health() {
    local svc="$1" pid
    pid="$(service_pid "$svc")" || return 1
    # A supervisor between two runs of its process serves nothing.
    if is_supervisor "$pid"; then
        child_pid "$svc" >/dev/null || return 1
    fi
    if has_function "health_${svc//-/_}"; then
        "health_${svc//-/_}"
    fi
}

# The pids of a running service, for messages.
describe_pids() {
    local svc="$1" pid cpid
    pid="$(service_pid "$svc")" || return 0
    if ! is_supervisor "$pid"; then
        printf 'pid %s, not supervised: started before supervision; stack.sh restart %s' "$pid" "$svc"
    elif cpid="$(child_pid "$svc")"; then
        printf 'pid %s, supervisor %s, restarts %s' "$cpid" "$pid" "$(restart_count "$svc")"
    else
        printf 'supervisor %s, restarts %s, waiting to restart it' "$pid" "$(restart_count "$svc")"
    fi
}

# wait_healthy SERVICE [fresh]: poll its health until it answers, its supervisor dies, or
# time runs out. A service just spawned ("fresh") whose process exits before it is healthy
# failed to start: restarting it would only repeat that, so it is stopped and the log shown.
wait_healthy() {
    local svc="$1" fresh="${2:-}" timeout=120
    has_function "start_timeout_${svc//-/_}" && timeout="$("start_timeout_${svc//-/_}")"
    local deadline=$((SECONDS + timeout))
    while true; do
        if ! service_pid "$svc" >/dev/null; then
            tail -n 25 "$LOG_DIR/$svc.log" >&2 2>/dev/null || true
            die "$svc exited while starting; the log above is the end of $LOG_DIR/$svc.log"
        fi
        if [ -n "$fresh" ] && [ "$(restart_count "$svc")" != 0 ]; then
            stop_service "$svc" >/dev/null
            tail -n 25 "$LOG_DIR/$svc.log" >&2 2>/dev/null || true
            die "$svc exited while starting; the log above is the end of $LOG_DIR/$svc.log"
        fi
        if service_health "$svc"; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "$svc did not become healthy within ${timeout}s; see $LOG_DIR/$svc.log"
        fi
        sleep 0.5
    done
}

port_in_use() {
    # Something accepts connections on 127.0.0.1:PORT.
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

check_ports() {
    local svc="$1" var port
    has_function "port_vars_${svc//-/_}" || return 0
    for var in $("port_vars_${svc//-/_}"); do
        port="${!var}"
        if port_in_use "$port"; then
            die "port $port (for $svc) is already in use by another process; set $var to a free port"
        fi
    done
}

check_disk() {
    local avail_kib need_kib
    avail_kib="$(df -Pk "$STATE_DIR" | awk 'NR==2 {print $4}')"
    need_kib=$((VI_MIN_FREE_GIB * 1024 * 1024))
    if [ "$avail_kib" -lt "$need_kib" ]; then
        die "only $((avail_kib / 1024)) MiB free for $STATE_DIR; the stack needs at least ${VI_MIN_FREE_GIB} GiB (free some disk, or set VI_STATE_DIR elsewhere)"
    fi
}

make_state_dirs() {
    mkdir -p "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" "$DATA_DIR" "$CACHE_DIR" "$OPT_DIR" "$ETC_DIR" "$M2_REPO"
    # Services that run as another user (postgres) must be able to reach their directories.
    chmod 755 "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" "$DATA_DIR"
}

start_service() {
    local svc="$1" pid
    known_service "$svc" || die "unknown service '$svc' (services: ${SERVICES[*]})"
    if pid="$(service_pid "$svc")"; then
        wait_healthy "$svc"
        has_function "after_start_${svc//-/_}" && "after_start_${svc//-/_}"
        say "$svc: running ($(describe_pids "$svc"))"
        return 0
    fi
    # A process whose supervisor was killed still holds the service's ports: end it first.
    if child_pid "$svc" >/dev/null; then
        stop_service "$svc"
    fi
    rm -f "$(pid_file "$svc")"
    check_disk
    has_function "preflight_${svc//-/_}" && "preflight_${svc//-/_}"
    check_ports "$svc"
    has_function "install_${svc//-/_}" && "install_${svc//-/_}"
    local began=$SECONDS
    "start_${svc//-/_}"
    wait_healthy "$svc" fresh
    has_function "after_start_${svc//-/_}" && "after_start_${svc//-/_}"
    say "$svc: started ($(describe_pids "$svc"), healthy after $((SECONDS - began))s)"
}

# end_process SERVICE PID SIGNAL: send SIGNAL, wait up to VI_STOP_TIMEOUT_SECONDS for the
# process to end, then KILL its process group (a supervisor leads one with its child) or,
# when it leads none, the process alone.
end_process() {
    local svc="$1" pid="$2" signal="$3" started
    started="$(live_start_time "$pid")" || return 0
    kill -s "$signal" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + VI_STOP_TIMEOUT_SECONDS))
    while is_process "$pid" "$started" && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if is_process "$pid" "$started"; then
        say "$svc: still running after ${VI_STOP_TIMEOUT_SECONDS}s; sending KILL"
        kill -s KILL -- "-$pid" 2>/dev/null || kill -s KILL "$pid" 2>/dev/null || true
        while is_process "$pid" "$started"; do
            sleep 0.2
        done
    fi
}

# session_members SID: the live processes of session SID other than its leader.
session_members() {
    local sid="$1" file stat pid
    local -a fields
    for file in /proc/[0-9]*/stat; do
        { read -r stat <"$file"; } 2>/dev/null || continue
        read -r -a fields <<<"${stat##*) }"
        [ "${fields[3]}" = "$sid" ] || continue
        case "${fields[0]}" in Z | X) continue ;; esac
        pid="${file#/proc/}"
        pid="${pid%/stat}"
        [ "$pid" = "$sid" ] || printf '%s\n' "$pid"
    done
}

# end_leftovers SERVICE SID: KILL what is left in the session of a service that has ended.
# spawn gave each service a session of its own (setsid), so anything still in it is
# something the service started and did not stop (an FFmpeg of a worker, say).
end_leftovers() {
    local svc="$1" sid="$2" tries=0
    local -a left
    mapfile -t left < <(session_members "$sid")
    [ "${#left[@]}" -gt 0 ] || return 0
    say "$svc: killing what it left running: ${left[*]}"
    kill -s KILL "${left[@]}" 2>/dev/null || true
    while [ -n "$(session_members "$sid")" ] && [ "$tries" -lt 50 ]; do
        sleep 0.2
        tries=$((tries + 1))
    done
}

stop_service() {
    local svc="$1" pid cpid sid="" ended=0
    known_service "$svc" || die "unknown service '$svc' (services: ${SERVICES[*]})"
    if pid="$(service_pid "$svc")"; then
        sid="$pid"
        if is_supervisor "$pid"; then
            # TERM tells the supervisor to stop its process with the service's signal and
            # to restart nothing; it exits once that process has.
            end_process "$svc" "$pid" TERM
        else
            end_process "$svc" "$pid" "$(stop_signal "$svc")" # started before supervision
        fi
        ended=1
    fi
    # A process whose supervisor was killed runs on unsupervised: stop it directly.
    if cpid="$(child_pid "$svc")"; then
        say "$svc: its supervisor is gone; stopping its process $cpid"
        sid="$(awk '{ sub(/.*\) /, ""); print $4 }' "/proc/$cpid/stat" 2>/dev/null || true)"
        end_process "$svc" "$cpid" "$(stop_signal "$svc")"
        ended=1
    fi
    # Only a session we saw alive is swept: a stale pid file's may be someone else's now.
    [ "$ended" = 1 ] && [ -n "$sid" ] && end_leftovers "$svc" "$sid"
    rm -f "$(pid_file "$svc")" "$(child_file "$svc")" "$(restarts_file "$svc")"
    if [ "$ended" = 1 ]; then
        say "$svc: stopped"
    else
        say "$svc: not running"
    fi
}

# ---------------------------------------------------------------------------- prerequisites

JAVA=""
require_java() {
    [ -n "$JAVA" ] && return 0
    local candidate=""
    if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
        candidate="$JAVA_HOME/bin/java"
    else
        candidate="$(command -v java || true)"
    fi
    [ -n "$candidate" ] || die "java not found (Kafka and the registry need Java 17 or newer): install it (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    local version major
    version="$("$candidate" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
    major="${version%%.*}"
    if [ "$major" = "1" ] || ! [ "$major" -ge 17 ] 2>/dev/null; then
        die "java at $candidate is version ${version:-unknown}; Kafka and the registry need 17 or newer (set JAVA_HOME)"
    fi
    JAVA="$candidate"
}

require_mvn() {
    command -v mvn >/dev/null || die "mvn not found (it fetches the Kafka and registry jars): install Maven 3 (apt-get install maven)"
}

mvn_quiet() {
    # -C: fail when a download does not match the checksum the repository publishes.
    local log="$LOG_DIR/maven.log"
    printf '\n=== %s mvn %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$*" >>"$log"
    if ! mvn -q -B -C -Dstyle.color=never -Dmaven.repo.local="$M2_REPO" "$@" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "mvn failed (the end of $log is above): mvn $*"
    fi
}

file_sha256() { sha256sum "$1" | awk '{print $1}'; }

# with_opt_lock COMMAND...: run COMMAND holding OPT_DIR's install lock, so stacks that share
# VI_OPT_DIR never unpack into it at the same time (each install re-checks once it holds it).
with_opt_lock() {
    exec 8>"$OPT_DIR/install.lock"
    flock -w 900 8 || die "another stack.sh has been installing into $OPT_DIR for 15 minutes ($OPT_DIR/install.lock)"
    "$@"
    flock -u 8
    exec 8>&-
}

# ---------------------------------------------------------------------------- postgres

PG_DATA="$DATA_DIR/postgres"
PG_SOCKET_DIR="$RUN_DIR/pgsocket"

port_vars_postgres() { echo VI_POSTGRES_PORT; }
stop_signal_postgres() { echo INT; } # fast shutdown: TERM would wait for every client to leave
start_timeout_postgres() { echo 60; }

# Run a command as the postgres OS user when we are root (PostgreSQL refuses to run as root).
as_pg() {
    if is_root; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

preflight_postgres() {
    [ -x "$VI_POSTGRES_BIN/postgres" ] && return 0
    is_root || die "PostgreSQL 15 not found in $VI_POSTGRES_BIN: install postgresql-15 (as root), or set VI_POSTGRES_BIN"
    say "postgres: installing postgresql-15 from Debian's packages"
    # Debian's package would create and start a cluster of its own on 5432; ours is the only one.
    mkdir -p /etc/postgresql-common
    if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
        echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
    fi
    apt_install postgresql-15
}

install_postgres() {
    mkdir -p "$PG_SOCKET_DIR"
    is_root && chown postgres:postgres "$PG_SOCKET_DIR"
    chmod 755 "$PG_SOCKET_DIR"
    [ -s "$PG_DATA/PG_VERSION" ] && return 0
    say "postgres: initialising $PG_DATA"
    rm -rf "$PG_DATA"
    mkdir -p "$PG_DATA"
    is_root && chown postgres:postgres "$PG_DATA"
    chmod 700 "$PG_DATA"
    as_pg test -w "$PG_DATA" || die "the postgres user cannot write $PG_DATA (check the permissions of its parent directories)"
    as_pg "$VI_POSTGRES_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >>"$LOG_DIR/postgres.log" 2>&1 ||
        die "initdb failed; see $LOG_DIR/postgres.log"
}

start_postgres() {
    local prefix=()
    is_root && prefix=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    spawn postgres "$PG_DATA" "${prefix[@]}" "$VI_POSTGRES_BIN/postgres" -D "$PG_DATA" \
        -c listen_addresses=127.0.0.1 -c port="$VI_POSTGRES_PORT" \
        -c unix_socket_directories="$PG_SOCKET_DIR" -c max_connections=300 \
        -c shared_buffers=256MB -c password_encryption=scram-sha-256
}

health_postgres() {
    "$VI_POSTGRES_BIN/pg_isready" -q -h 127.0.0.1 -p "$VI_POSTGRES_PORT" -t 2
}

psql_admin() {
    "$VI_POSTGRES_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" \
        -p "$VI_POSTGRES_PORT" -U postgres -d postgres "$@"
}

after_start_postgres() {
    # The role and databases the platform and the registry use (idempotent).
    psql_admin -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vidinsight') THEN
            CREATE ROLE vidinsight LOGIN CREATEDB PASSWORD 'vidinsight';
        END IF; END \$\$;" >/dev/null || die "could not create the vidinsight role"
    local db
    for db in vidinsight apicurio; do
        if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
            psql_admin -c "CREATE DATABASE $db OWNER vidinsight" >/dev/null ||
                die "could not create database $db"
        fi
    done
}

# ---------------------------------------------------------------------------- kafka

KAFKA_HOME="$OPT_DIR/kafka"
KAFKA_DATA="$DATA_DIR/kafka"
KAFKA_CLUSTER_ID_FILE="$DATA_DIR/kafka.cluster-id"
KAFKA_CONFIG="$ETC_DIR/kafka/server.properties"
KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"

port_vars_kafka() { echo VI_KAFKA_PORT VI_KAFKA_CONTROLLER_PORT ${VI_KAFKA_PROXIED_PORT:+VI_KAFKA_PROXIED_PORT}; }
start_timeout_kafka() { echo 120; }

# The proxied listener (see the header) needs both ports: where the broker listens for it and
# the proxy's, which it advertises.
kafka_proxied() { [ -n "${VI_KAFKA_PROXIED_PORT:-}" ] && [ -n "${VI_KAFKA_PROXY_PORT:-}" ]; }
check_kafka_proxy_ports() {
    kafka_proxied && return 0
    [ -z "${VI_KAFKA_PROXIED_PORT:-}${VI_KAFKA_PROXY_PORT:-}" ] && return 0
    die "set both VI_KAFKA_PROXIED_PORT (the broker's proxied listener) and VI_KAFKA_PROXY_PORT (the proxy in front of it, which the broker advertises), or neither"
}

# server.properties.in with this stack's ports and data directory, on stdout.
render_kafka_config() {
    local listener="" advertised="" protocol=""
    if kafka_proxied; then
        listener=",PROXIED://127.0.0.1:$VI_KAFKA_PROXIED_PORT"
        advertised=",PROXIED://127.0.0.1:$VI_KAFKA_PROXY_PORT"
        protocol=",PROXIED:PLAINTEXT"
    fi
    sed -e "s#@PORT@#$VI_KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$VI_KAFKA_CONTROLLER_PORT#g" \
        -e "s#@DATA_DIR@#$KAFKA_DATA#g" -e "s#@PROXIED_LISTENER@#$listener#" \
        -e "s#@PROXIED_ADVERTISED@#$advertised#" -e "s#@PROXIED_PROTOCOL@#$protocol#" \
        "$SCRIPT_DIR/kafka/server.properties.in"
}

kafka_installed() {
    [ -f "$KAFKA_HOME/libs.sha256" ] && [ "$(cat "$KAFKA_HOME/libs.sha256")" = "$(file_sha256 "$KAFKA_POM")" ]
}

preflight_kafka() {
    require_java
    check_kafka_proxy_ports
    kafka_installed || require_mvn
}

kafka_java() {
    "$JAVA" -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.xml" -cp "$KAFKA_HOME/libs/*" "$@"
}

fetch_kafka_libs() {
    kafka_installed && return 0 # another stack sharing OPT_DIR did it while we waited
    say "kafka: fetching the broker's jars with Maven (checksums checked)"
    rm -rf "$KAFKA_HOME/libs.tmp"
    mkdir -p "$KAFKA_HOME"
    mvn_quiet -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$KAFKA_HOME/libs.tmp"
    rm -rf "$KAFKA_HOME/libs"
    mv "$KAFKA_HOME/libs.tmp" "$KAFKA_HOME/libs"
    file_sha256 "$KAFKA_POM" >"$KAFKA_HOME/libs.sha256"
}

install_kafka() {
    kafka_installed || with_opt_lock fetch_kafka_libs
    mkdir -p "$(dirname "$KAFKA_CONFIG")"
    render_kafka_config >"$KAFKA_CONFIG"
    [ -f "$KAFKA_DATA/meta.properties" ] && return 0
    if [ ! -s "$KAFKA_CLUSTER_ID_FILE" ]; then
        # The tool prints a log line before the id: keep only the id (22 base64url characters).
        local id
        id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka.log" |
            grep -E '^[A-Za-z0-9_-]{22}$' | tail -n 1)" || true
        [ -n "$id" ] || die "kafka StorageTool random-uuid gave no cluster id; see $LOG_DIR/kafka.log"
        printf '%s\n' "$id" >"$KAFKA_CLUSTER_ID_FILE"
    fi
    say "kafka: formatting $KAFKA_DATA (cluster id $(cat "$KAFKA_CLUSTER_ID_FILE"))"
    mkdir -p "$KAFKA_DATA"
    kafka_java kafka.tools.StorageTool format --standalone -t "$(cat "$KAFKA_CLUSTER_ID_FILE")" \
        -c "$KAFKA_CONFIG" -g >>"$LOG_DIR/kafka.log" 2>&1 ||
        die "kafka storage format failed; see $LOG_DIR/kafka.log"
}

start_kafka() {
    local heap
    read -r -a heap <<<"$VI_KAFKA_HEAP_OPTS"
    # Run in the stack's log directory, where a JVM crash report (hs_err_pid*.log) belongs,
    # never in OPT_DIR, which other stacks may share (the registry likewise).
    spawn kafka "$LOG_DIR" "$JAVA" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.xml" \
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$KAFKA_CONFIG"
}

health_kafka() {
    python3 "$SCRIPT_DIR/kafka_probe.py" 127.0.0.1 "$VI_KAFKA_PORT" 2 2>/dev/null
}

# ---------------------------------------------------------------------------- registry

REGISTRY_POM="$SCRIPT_DIR/registry/pom.xml"
REGISTRY_VERSION="$(sed -n 's#.*<apicurio.version>\(.*\)</apicurio.version>.*#\1#p' "$REGISTRY_POM")"
REGISTRY_HOME="$OPT_DIR/apicurio/$REGISTRY_VERSION"

port_vars_registry() { echo VI_REGISTRY_PORT; }
start_timeout_registry() { echo 180; }

registry_url() { printf 'http://127.0.0.1:%s/apis/ccompat/v7' "$VI_REGISTRY_PORT"; }

# The runnable jar: quarkus-app/quarkus-run.jar (3.1 and newer) or *-runner.jar (3.0.x).
registry_jar() {
    if [ -f "$REGISTRY_HOME/quarkus-app/quarkus-run.jar" ]; then
        printf '%s' "$REGISTRY_HOME/quarkus-app/quarkus-run.jar"
        return 0
    fi
    local jar
    for jar in "$REGISTRY_HOME"/*-runner.jar; do
        [ -f "$jar" ] && printf '%s' "$jar" && return 0
    done
    return 1
}

preflight_registry() {
    require_java
    registry_jar >/dev/null || require_mvn
}

install_registry() {
    registry_jar >/dev/null || with_opt_lock fetch_registry
}

fetch_registry() {
    registry_jar >/dev/null && return 0 # another stack sharing OPT_DIR did it while we waited
    say "registry: fetching Apicurio Registry $REGISTRY_VERSION with Maven (checksums checked)"
    rm -rf "$REGISTRY_HOME.tmp"
    mkdir -p "$(dirname "$REGISTRY_HOME")"
    mvn_quiet -f "$REGISTRY_POM" dependency:unpack -Dapicurio.dir="$REGISTRY_HOME.tmp"
    rm -rf "$REGISTRY_HOME"
    mv "$REGISTRY_HOME.tmp" "$REGISTRY_HOME"
    rm -rf "$REGISTRY_HOME.tmp.markers"
    registry_jar >/dev/null || die "no runnable jar in $REGISTRY_HOME after unpacking"
}

start_registry() {
    health_postgres || die "the registry keeps its schemas in PostgreSQL, which is not running: start it first (stack.sh start postgres)"
    local heap jar
    read -r -a heap <<<"$VI_REGISTRY_HEAP_OPTS"
    jar="$(registry_jar)"
    spawn registry "$LOG_DIR" env \
        APICURIO_STORAGE_KIND=sql \
        APICURIO_STORAGE_SQL_KIND=postgresql \
        APICURIO_DATASOURCE_URL="jdbc:postgresql://127.0.0.1:$VI_POSTGRES_PORT/apicurio" \
        APICURIO_DATASOURCE_USERNAME=vidinsight \
        APICURIO_DATASOURCE_PASSWORD=vidinsight \
        APICURIO_DATASOURCE_JDBC_INITIAL_SIZE=2 \
        APICURIO_DATASOURCE_JDBC_MIN_SIZE=2 \
        APICURIO_DATASOURCE_JDBC_MAX_SIZE=20 \
        "$JAVA" "${heap[@]}" -Djava.awt.headless=true \
        -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$VI_REGISTRY_PORT" \
        -Dapicurio.ccompat.legacy-id-mode.enabled=false \
        -Dquarkus.datasource.postgresql.jdbc.validate-on-borrow=true \
        -jar "$jar"
}

health_registry() {
    curl -fsS -o /dev/null --max-time 3 "$(registry_url)/subjects" 2>/dev/null
}

after_start_registry() {
    # Confluent's default compatibility is BACKWARD; Apicurio's is NONE. Make it BACKWARD.
    local answer
    answer="$(curl -fsS --max-time 10 -X PUT \
        -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
        -d '{"compatibility":"BACKWARD"}' "$(registry_url)/config")" ||
        die "could not set the registry's global compatibility to BACKWARD"
    case "$answer" in
    *BACKWARD*) ;;
    *) die "the registry answered '$answer' when setting compatibility BACKWARD" ;;
    esac
}

# ---------------------------------------------------------------------------- s3

# The Versity S3 gateway (Apache-2.0): S3 over one loopback port, objects as files in a
# folder (decision 0015). Built from source with the Go toolchain, as Go modules are
# the only form in which this machine's registries serve it.
VERSITYGW_VERSION=v1.8.0
VERSITYGW_HOME="$OPT_DIR/versitygw/$VERSITYGW_VERSION"
S3_DATA="$DATA_DIR/s3"

port_vars_s3() { echo VI_S3_PORT; }

go_binary() {
    command -v go 2>/dev/null && return 0
    [ -x /usr/local/go/bin/go ] && printf '%s' /usr/local/go/bin/go && return 0
    return 1
}

preflight_s3() {
    [ -x "$VERSITYGW_HOME/versitygw" ] || go_binary >/dev/null ||
        die "go not found (it builds the Versity S3 gateway): install Go 1.22 or newer"
}

install_s3() {
    [ -x "$VERSITYGW_HOME/versitygw" ] || with_opt_lock fetch_s3
}

fetch_s3() {
    [ -x "$VERSITYGW_HOME/versitygw" ] && return 0 # another stack sharing OPT_DIR did it
    say "s3: building the Versity S3 gateway $VERSITYGW_VERSION with go install (checksums checked)"
    rm -rf "$VERSITYGW_HOME.tmp"
    mkdir -p "$VERSITYGW_HOME.tmp"
    GOBIN="$VERSITYGW_HOME.tmp" GOPATH="$CACHE_DIR/go" GOMODCACHE="$CACHE_DIR/go/mod" \
        GOCACHE="$CACHE_DIR/go/build" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
        "$(go_binary)" install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
        >>"$LOG_DIR/s3-build.log" 2>&1 || die "go install of versitygw failed; see $LOG_DIR/s3-build.log"
    rm -rf "$VERSITYGW_HOME"
    mv "$VERSITYGW_HOME.tmp" "$VERSITYGW_HOME"
}

start_s3() {
    # The posix backend serves each top-level folder as a bucket.
    mkdir -p "$S3_DATA/$VI_S3_BUCKET"
    # The keys go in the environment, not on the command line that spawn logs.
    ROOT_ACCESS_KEY="$VI_S3_ACCESS_KEY" ROOT_SECRET_KEY="$VI_S3_SECRET_KEY" \
        spawn s3 "$LOG_DIR" "$VERSITYGW_HOME/versitygw" --port "127.0.0.1:$VI_S3_PORT" \
        --health /health --quiet posix "$S3_DATA"
}

health_s3() {
    curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$VI_S3_PORT/health" 2>/dev/null
}

# ---------------------------------------------------------------------------- extra services

# VI_STACK_SERVICES_DIR replaces services.d (the tests define a small service of their own).
SERVICES_D="${VI_STACK_SERVICES_DIR:-$SCRIPT_DIR/services.d}"
if [ -d "$SERVICES_D" ]; then
    for extra in "$SERVICES_D"/*.sh; do
        [ -f "$extra" ] || continue
        # shellcheck source=/dev/null
        source "$extra"
    done
fi

# ---------------------------------------------------------------------------- commands

LOCKED=0
take_lock() {
    [ "$LOCKED" = 1 ] && return 0
    make_state_dirs
    exec 9>"$RUN_DIR/stack.lock"
    flock -w 900 9 || die "another stack.sh holds $RUN_DIR/stack.lock"
    LOCKED=1
}

release_lock() {
    [ "$LOCKED" = 1 ] || return 0
    flock -u 9
    exec 9>&-
    LOCKED=0
}

# Install Debian packages (as root), refreshing the package lists once if the first try fails.
# --force-confold keeps configuration we wrote before the install (postgresql-common's). A
# policy-rc.d that answers 101 stops the packages' init scripts from starting daemons of their
# own (prometheus would listen on 9090): every process here is started, and stopped, by pid.
apt_install() {
    local apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confold)
    local policy=/usr/sbin/policy-rc.d ours=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "$@" >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "$@" >/dev/null || rc=1
    fi
    [ "$ours" = 0 ] || rm -f "$policy"
    [ "$rc" = 0 ] || die "could not install $* with apt-get"
}

# Test media is generated with espeak-ng (speech with a known script); install it when missing.
preflight_media_tools() {
    command -v espeak-ng >/dev/null && return 0
    is_root || die "espeak-ng not found (the media tests synthesise speech with it): install espeak-ng (as root)"
    say "media: installing espeak-ng from Debian's packages"
    apt_install espeak-ng
}

# The browser test drives Debian's chromium through chromedriver; the observability test runs
# Debian's prometheus (and promtool). Only `with` (the test runner) needs them.
TEST_PACKAGES=(chromium:/usr/bin/chromium chromium-driver:/usr/bin/chromedriver prometheus:/usr/bin/prometheus)
preflight_test_tools() {
    local entry missing=()
    for entry in "${TEST_PACKAGES[@]}"; do
        [ -x "${entry#*:}" ] || missing+=("${entry%%:*}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    is_root || die "${missing[*]} not found (the browser and Prometheus tests need them): install them (as root)"
    say "tests: installing ${missing[*]} from Debian's packages"
    apt_install "${missing[@]}"
}

preflight_all() {
    local svc
    check_disk
    preflight_media_tools
    for svc in "${SERVICES[@]}"; do
        has_function "preflight_${svc//-/_}" && "preflight_${svc//-/_}"
    done
    return 0
}

cmd_up() {
    take_lock
    local began=$SECONDS svc
    preflight_all
    for svc in "${SERVICES[@]}"; do
        start_service "$svc"
    done
    say "up: ${#SERVICES[@]} services healthy ($((SECONDS - began))s)"
}

cmd_down() {
    take_lock
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        stop_service "${SERVICES[$i]}"
    done
    rm -f "$RUN_DIR/platform.prepared" # the next `up` checks the schema and topics again
}

# status_line SERVICE: "NAME STATE DETAILS"; returns 1 unless the service is healthy.
status_line() {
    local svc="$1" pid cpid state details="" rc=0
    if pid="$(service_pid "$svc")"; then
        details="$(describe_pids "$svc")"
        if is_supervisor "$pid" && ! child_pid "$svc" >/dev/null; then
            state="restarting" # between two runs: see the backoff in its log
            rc=1
        elif service_health "$svc"; then
            state="healthy"
        else
            state="unhealthy"
            rc=1
        fi
    elif cpid="$(child_pid "$svc")"; then
        state="unsupervised"
        details="pid $cpid; its supervisor is gone (stack.sh restart $svc)"
        rc=1
    else
        state="stopped"
        rc=1
    fi
    if [ -n "$details" ]; then
        printf '%-20s %-12s %s\n' "$svc" "$state" "$details"
    else
        printf '%-20s %s\n' "$svc" "$state"
    fi
    return "$rc"
}

cmd_status() {
    local svc bad=0 selected=("${SERVICES[@]}")
    if [ -n "${1:-}" ]; then
        need_service_arg "$1"
        selected=("$1")
    fi
    for svc in "${selected[@]}"; do
        status_line "$svc" || bad=1
    done
    return "$bad"
}

cmd_logs() {
    local follow=0 lines="${VI_LOG_LINES:-100}" svc="" arg
    for arg in "$@"; do
        case "$arg" in
        -f | --follow) follow=1 ;;
        *) svc="$arg" ;;
        esac
    done
    local files=()
    if [ -n "$svc" ]; then
        known_service "$svc" || die "unknown service '$svc' (services: ${SERVICES[*]})"
        files=("$LOG_DIR/$svc.log")
    else
        for svc in "${SERVICES[@]}"; do
            [ -f "$LOG_DIR/$svc.log" ] && files+=("$LOG_DIR/$svc.log")
        done
    fi
    [ "${#files[@]}" -gt 0 ] || die "no logs yet in $LOG_DIR"
    if [ "$follow" = 1 ]; then
        exec tail -n "$lines" -F "${files[@]}"
    fi
    tail -n "$lines" "${files[@]}"
}

cmd_with() {
    [ $# -gt 0 ] || die "with: which command? (stack.sh with pytest ...)"
    take_lock
    preflight_all
    preflight_test_tools
    local svc started=() rc=0 i
    for svc in "${INFRA_SERVICES[@]}"; do
        if service_pid "$svc" >/dev/null; then
            # Running already (perhaps restarting): wait for it, but it is not ours to stop.
            service_health "$svc" || start_service "$svc"
        else
            start_service "$svc"
            started+=("$svc")
        fi
    done
    # The command may stop and start services itself (fault tests): it must not wait on us.
    release_lock
    "$@" || rc=$?
    if [ "${#started[@]}" -gt 0 ]; then
        take_lock
        for ((i = ${#started[@]} - 1; i >= 0; i--)); do
            stop_service "${started[$i]}"
        done
    fi
    return "$rc"
}

need_service_arg() {
    [ -n "${1:-}" ] || die "which service? (${SERVICES[*]})"
    known_service "$1" || die "unknown service '$1' (services: ${SERVICES[*]})"
}

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status "$@" ;;
    services) printf '%s\n' "${SERVICES[@]}" ;;
    with) cmd_with "$@" ;;
    logs) cmd_logs "$@" ;;
    start)
        need_service_arg "${1:-}"
        take_lock
        start_service "$1"
        ;;
    stop)
        need_service_arg "${1:-}"
        take_lock
        stop_service "$1"
        ;;
    restart)
        need_service_arg "${1:-}"
        take_lock
        stop_service "$1"
        start_service "$1"
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

# Sourced rather than run (tests/test_stack.py reads the services and rendered config that
# way): define everything, do nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi

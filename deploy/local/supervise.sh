#!/usr/bin/env bash
# supervise.sh SERVICE RUN_DIR STOP_SIGNAL COMMAND...: keep one service of the local stack
# running. stack.sh's spawn starts this script in a session of its own (setsid) and records
# this script's pid as the service's; COMMAND runs as its child.
#
# Whenever the child exits, whatever its code or signal (a stage worker exits 70 when it
# judges itself hung; an OOM kill is a SIGKILL), it is started again after a backoff:
# 1 s, 2 s, 4 s ... capped at VI_RESTART_MAX_DELAY_SECONDS (30). A child that stayed up
# VI_RESTART_RESET_SECONDS (60) or longer counts as healthy: the next delay is 1 s again.
#
# SIGTERM (stack.sh stop) ends supervision: the child gets STOP_SIGNAL, this script waits
# for it to exit, then exits too and restarts nothing. If that takes too long, stack.sh
# KILLs the whole process group (this script and the child share it).
#
# Files kept in RUN_DIR, for stack.sh status:
#   SERVICE.child     the child's pid and kernel start time (absent between two runs)
#   SERVICE.restarts  how many times the child was restarted since this script started
set -u

svc="$1" run_dir="$2" stop_signal="$3"
shift 3
max_delay="${VI_RESTART_MAX_DELAY_SECONDS:-30}"
reset_after="${VI_RESTART_RESET_SECONDS:-60}"

child=""    # the running child's pid, empty while none runs
sleeper=""  # the pid of the backoff's sleep, so that TERM can cut it short
stopping=0  # set by TERM: restart nothing from now on
restarts=0

note() { printf '=== %s supervise: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$*"; }

# Readers (stack.sh status) must never see a half-written file: write aside, then rename.
write_state() {
    printf '%s\n' "$2" >"$run_dir/$svc.$1.tmp" && mv -f "$run_dir/$svc.$1.tmp" "$run_dir/$svc.$1"
}

# The kernel's start time of a process (field 22 of /proc/PID/stat): with the pid it names
# this very process, not a later one that reuses the pid.
start_time() {
    local stat fields
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    read -r -a fields <<<"${stat##*) }"
    printf '%s' "${fields[19]}"
}

# shellcheck disable=SC2317 # run by the TERM trap below
on_term() {
    stopping=1
    if [ -n "$child" ]; then kill -s "$stop_signal" "$child" 2>/dev/null; fi
    if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null; fi
}
trap on_term TERM

# Wait for the child to exit and set rc to its status (128 + N for signal N). A trapped
# TERM interrupts `wait` while the child still runs: then wait again. Bash's own report of
# a killed child ("line N: PID Killed") is dropped: the service's log holds JSON lines and
# this script's notes, and the note below says how the child ended.
wait_child() {
    wait "$child" 2>/dev/null
    rc=$?
    while kill -0 "$child" 2>/dev/null; do
        wait "$child" 2>/dev/null
        rc=$?
        [ "$rc" = 127 ] && break # not our child any more: its pid was reused
    done
}

describe_exit() {
    if [ "$1" -gt 128 ]; then
        printf 'was killed by SIG%s' "$(kill -l "$(($1 - 128))" 2>/dev/null || echo "$(($1 - 128))")"
    else
        printf 'exited with code %s' "$1"
    fi
}

# Sleep DELAY seconds in the background, so that a TERM meanwhile ends the sleep at once
# (bash runs a trap only after a foreground command has finished).
backoff() {
    sleep "$1" &
    sleeper=$!
    [ "$stopping" = 1 ] || wait "$sleeper"
    kill "$sleeper" 2>/dev/null
    sleeper=""
}

write_state restarts 0
delay=1
rc=0
while true; do
    began=$SECONDS
    "$@" &
    child=$!
    write_state child "$child $(start_time "$child")"
    # A TERM that came while the child was being started found no child to signal.
    if [ "$stopping" = 1 ]; then kill -s "$stop_signal" "$child" 2>/dev/null; fi
    wait_child
    child=""
    rm -f "$run_dir/$svc.child"
    [ "$stopping" = 1 ] && break

    uptime=$((SECONDS - began))
    [ "$uptime" -ge "$reset_after" ] && delay=1
    restarts=$((restarts + 1))
    write_state restarts "$restarts"
    note "$svc $(describe_exit "$rc") after ${uptime}s; restart $restarts in ${delay}s"
    backoff "$delay"
    [ "$stopping" = 1 ] && break
    note "restarting $svc"
    delay=$((delay * 2 < max_delay ? delay * 2 : max_delay))
done
note "$svc stopped (stack.sh stop); supervision ends"
exit 0

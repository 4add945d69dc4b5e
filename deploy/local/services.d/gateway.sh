# The REST ingestion gateway under `make up`: `vidinsight gateway` on
# 127.0.0.1:$VI_GATEWAY_PORT (8000), healthy once /healthz answers, with its Prometheus
# metrics on a port of their own: GATEWAY_METRICS_PORT, the one after the cost
# aggregator's, VI_METRICS_PORT_BASE (9101) + 8 = 9109. Sourced by stack.sh (add_service,
# spawn, port_in_use); prepare_platform and GATEWAY_METRICS_PORT come from platform.sh,
# sourced in the same pass and used only when the service starts. `stack.sh with` (make test)
# starts the infrastructure only, so tests run their own gateways.

: "${VI_GATEWAY_PORT:=8000}"
export VI_GATEWAY_PORT

[ "${VI_STACK_PLATFORM:-1}" = 1 ] && add_service gateway
start_gateway() {
    VI_METRICS_PORT=$GATEWAY_METRICS_PORT spawn gateway "$REPO_ROOT" "$REPO_ROOT/.venv/bin/vidinsight" gateway
}
health_gateway() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$VI_GATEWAY_PORT; printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3; grep -q '\"ok\"' <&3" 2>/dev/null
}
install_gateway() { prepare_platform; }
port_vars_gateway() { echo VI_GATEWAY_PORT; }
start_timeout_gateway() { echo 60; }

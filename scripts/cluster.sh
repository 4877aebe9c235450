#!/usr/bin/env bash
# Runs a flashsale cluster on this machine: N nodes behind nginx, sharing one Redis and one
# PostgreSQL.
#
#   scripts/cluster.sh start [N]   start N nodes (default 2), nginx in front, a private Redis
#   scripts/cluster.sh stop        stop nginx, the nodes (SIGTERM: they drain), the private Redis
#   scripts/cluster.sh status      what runs, and the audit-free health of each part
#
# Environment (all optional):
#   FLASHSALE_CLUSTER_DIR   run directory (default ./cluster-run): logs, pids, secrets, data
#   FLASHSALE_CLUSTER_PORT  nginx's port (default 8080); nodes use the next N ports
#   FLASHSALE_REDIS_URL     an existing Redis to use; when unset a private redis-server is started
#                           with AOF fsynced on every write (appendonly yes, appendfsync always)
#   CLUSTER_REDIS_PORT      the private Redis's port (default 6390)
#   FLASHSALE_DATABASE_URL  PostgreSQL (default postgres://postgres@127.0.0.1:5432/test)
#   FLASHSALE_DATABASE_SCHEMA  schema of the tables (default flashsale_cluster)
# nginx comes from Debian's package, installed on first use when running as root.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
run="${FLASHSALE_CLUSTER_DIR:-$root/cluster-run}"
port="${FLASHSALE_CLUSTER_PORT:-8080}"
redis_port="${CLUSTER_REDIS_PORT:-6390}"
database_url="${FLASHSALE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
schema="${FLASHSALE_DATABASE_SCHEMA:-flashsale_cluster}"
binary="$root/target/release/flashsale"

say() { printf 'cluster: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

secret() {
    local file="$run/$1"
    if [[ ! -s "$file" ]]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
    fi
    cat "$file"
}

wait_for() { # url, what
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    fail "$2 did not become ready at $1 (see $run/*.log)"
}

ensure_nginx() {
    command -v nginx >/dev/null && return
    [[ -x /usr/sbin/nginx ]] && return
    [[ "$(id -u)" == 0 ]] || fail "nginx is missing: apt-get install nginx-light (as root)"
    say "installing nginx-light from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
}

nginx_binary() { command -v nginx || echo /usr/sbin/nginx; }

start() {
    local nodes="${1:-2}"
    [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || fail "node count must be a positive number"
    [[ -f "$run/nodes" ]] && fail "a cluster already runs from $run: scripts/cluster.sh stop"
    mkdir -p "$run"
    if [[ ! -x "$binary" ]]; then
        say "building the release binary"
        (cd "$root" && cargo build --release -j2)
    fi
    ensure_nginx

    local redis_url="${FLASHSALE_REDIS_URL:-}"
    if [[ -z "$redis_url" ]]; then
        mkdir -p "$run/redis"
        redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run/redis" \
            --appendonly yes --appendfsync always --save '' \
            --daemonize yes --pidfile "$run/redis.pid" --logfile "$run/redis.log"
        redis_url="redis://127.0.0.1:$redis_port/"
        for _ in $(seq 1 50); do
            redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
        say "private Redis (AOF, fsync always) on port $redis_port"
    fi
    echo "$redis_url" >"$run/redis_url"

    local admin jwt upstream=""
    admin="$(secret admin_token)"
    jwt="$(secret jwt_secret)"
    : >"$run/nodes"
    for i in $(seq 1 "$nodes"); do
        local node_port=$((port + i))
        mkdir -p "$run/node-$i"
        FLASHSALE_REDIS_URL="$redis_url" \
        FLASHSALE_DATABASE_URL="$database_url" \
        FLASHSALE_DATABASE_SCHEMA="$schema" \
        FLASHSALE_ADMIN_TOKEN="$admin" \
        FLASHSALE_JWT_SECRET="$jwt" \
            nohup "$binary" serve --listen "127.0.0.1:$node_port" --data-dir "$run/node-$i" \
            >"$run/node-$i.log" 2>&1 &
        echo "$! $node_port" >>"$run/nodes"
        upstream+="        server 127.0.0.1:$node_port max_fails=0;"$'\n'
    done
    while read -r _ node_port; do
        wait_for "http://127.0.0.1:$node_port/readyz" "node on port $node_port"
    done <"$run/nodes"

    mkdir -p "$run/nginx/logs"
    cat >"$run/nginx.conf" <<CONF
worker_processes auto;
pid $run/nginx.pid;
error_log $run/nginx/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    upstream flashsale {
$upstream        keepalive 256;
    }
    server {
        listen 127.0.0.1:$port backlog=65535;
        location / {
            proxy_pass http://flashsale;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            # A purchase is not idempotent: never replay it on another node.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 1;
        }
    }
}
CONF
    "$(nginx_binary)" -p "$run/nginx" -c "$run/nginx.conf"
    wait_for "http://127.0.0.1:$port/readyz" "nginx"
    say "$nodes nodes behind nginx at http://127.0.0.1:$port"
    say "admin token: $admin"
    say "buyer token: FLASHSALE_JWT_SECRET=\$(cat $run/jwt_secret) $binary token --user alice"
}

stop() {
    [[ -d "$run" ]] || { say "nothing runs from $run"; return; }
    if [[ -f "$run/nginx.pid" ]]; then
        "$(nginx_binary)" -p "$run/nginx" -c "$run/nginx.conf" -s quit 2>/dev/null || true
    fi
    if [[ -f "$run/nodes" ]]; then
        while read -r pid _; do kill -TERM "$pid" 2>/dev/null || true; done <"$run/nodes"
        while read -r pid _; do
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        done <"$run/nodes"
        rm -f "$run/nodes"
    fi
    if [[ -f "$run/redis.pid" ]]; then
        redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || true
        rm -f "$run/redis.pid"
    fi
    say "stopped"
}

status() {
    [[ -f "$run/nodes" ]] || { say "no cluster runs from $run"; return 1; }
    while read -r pid node_port; do
        if curl -fsS -o /dev/null "http://127.0.0.1:$node_port/readyz"; then
            say "node $pid on port $node_port: ready"
        else
            say "node $pid on port $node_port: NOT ready"
        fi
    done <"$run/nodes"
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz"; then
        say "nginx on port $port: ready"
    else
        say "nginx on port $port: NOT ready"
    fi
}

case "${1:-}" in
    start) start "${2:-2}" ;;
    stop) stop ;;
    status) status ;;
    *) fail "usage: scripts/cluster.sh start [N] | stop | status" ;;
esac

#!/usr/bin/env bash
# Runs a command with a private redis-server on a free loopback port:
#   tests/with-redis.sh cargo test -p hornbeam-core
# The server keeps nothing on disk (--save '' --appendonly no) and is stopped by its PID on exit.
# The command sees HORNBEAM_TEST_REDIS_URL=redis://127.0.0.1:PORT/0 and REDIS_PORT=PORT.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || true)}"
if [ -z "$REDIS_SERVER" ]; then
    echo "$0: redis-server is not installed (apt-get install redis-server)" >&2
    exit 1
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PORT="$(free_port)"
LOG="$(mktemp -t hb-redis-XXXXXX.log)"
"$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no >"$LOG" 2>&1 &
REDIS_PID=$!

stop_redis() {
    if kill -0 "$REDIS_PID" 2>/dev/null; then
        kill "$REDIS_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -9 "$REDIS_PID" 2>/dev/null || true
    fi
    rm -f "$LOG"
}
trap stop_redis EXIT

# Wait (at most 10 s) until it accepts connections.
for i in $(seq 1 200); do
    if redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$REDIS_PID" 2>/dev/null || [ "$i" -eq 200 ]; then
        echo "$0: redis-server did not start on port $PORT:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.05
done

export REDIS_PORT="$PORT"
export HORNBEAM_TEST_REDIS_URL="redis://127.0.0.1:$PORT/0"
echo "with-redis: redis-server pid $REDIS_PID on 127.0.0.1:$PORT" >&2
set +e
"$@"
status=$?
set -e
exit "$status"

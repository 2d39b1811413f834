#!/usr/bin/env bash
# Start the real servers dlock's tests use, on loopback: Redis 6379, MariaDB 3306, ZooKeeper 2181,
# PostgreSQL 5432 (user postgres, trusted on loopback, database test), etcd 2379. Also installs
# protoc, which building the etcd client needs.
#   scripts/services.sh up       install what is missing (Debian packages), start what does not answer
#   scripts/services.sh status   one line per server
#   scripts/services.sh down     stop them
# Idempotent; fast (< 2 s) when all are up. Needs root (or sudo) for the first install.
set -euo pipefail

REDIS_PORT=6379
MYSQL_PORT=3306
ZK_PORT=2181
PG_PORT=5432
ETCD_PORT=2379
ETCD_DIR=/tmp/dlock-etcd
ZK_SERVER=/usr/share/zookeeper/bin/zkServer.sh

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

redis_ok() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p $REDIS_PORT ping 2>/dev/null)" = "PONG" ]; }
mysql_ok() { command -v mysql >/dev/null && mysql -h 127.0.0.1 -P $MYSQL_PORT -u root --password= -e 'SELECT 1' test >/dev/null 2>&1; }
# ZooKeeper's four-letter words are not whitelisted on Debian: probe with a real client request.
zk_ok() {
  port_open $ZK_PORT || return 1
  # A ZooKeeper ConnectRequest (protocol 0, timeout 10 s, empty password): a live server answers
  # with a 36+ byte ConnectResponse; a half-started one closes the socket.
  python3 - "$ZK_PORT" <<'PY' 2>/dev/null
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
body = struct.pack(">iqiq", 0, 0, 10000, 0) + struct.pack(">i", 16) + b"\0" * 16
s.sendall(struct.pack(">i", len(body)) + body)
data = s.recv(64)
sys.exit(0 if len(data) >= 20 else 1)
PY
}

pg_ok() { command -v psql >/dev/null && psql -h 127.0.0.1 -p $PG_PORT -U postgres -d test -tAc 'SELECT 1' >/dev/null 2>&1; }

etcd_ok() { port_open $ETCD_PORT && curl -sf -X POST "http://127.0.0.1:$ETCD_PORT/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1; }

wait_for() { # name check timeout_s
  local name=$1 check=$2 limit=$3 i=0
  while ! $check; do
    i=$((i + 1))
    if [ $i -gt $((limit * 10)) ]; then echo "$name did not come up within ${limit}s" >&2; return 1; fi
    sleep 0.1
  done
}

install_missing() {
  local pkgs=()
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v mariadbd >/dev/null || command -v mysqld >/dev/null || pkgs+=(mariadb-server)
  [ -x "$ZK_SERVER" ] || pkgs+=(zookeeper)
  command -v pg_ctlcluster >/dev/null || pkgs+=(postgresql)
  command -v etcd >/dev/null || pkgs+=(etcd-server)
  command -v protoc >/dev/null || pkgs+=(protobuf-compiler)
  command -v curl >/dev/null || pkgs+=(curl)
  # The TLS tests make their certificates with openssl and run ZooKeeper's Netty (TLS) server.
  command -v openssl >/dev/null || pkgs+=(openssl)
  [ -f /usr/share/java/netty-codec.jar ] || pkgs+=(libnetty-java)
  if [ ${#pkgs[@]} -gt 0 ]; then
    echo "installing ${pkgs[*]} ..."
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

redis_up() {
  redis_ok && return 0
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no \
    --logfile /tmp/dlock-redis.log --dir /tmp >/dev/null
  wait_for redis redis_ok 20
}

mysql_up() {
  mysql_ok && return 0
  if ! port_open $MYSQL_PORT; then
    $SUDO service mariadb start >/dev/null 2>&1 || $SUDO service mysql start >/dev/null
  fi
  wait_for mariadb-port "port_open $MYSQL_PORT" 60
  # root@localhost authenticates by unix_socket on Debian: allow TCP with an empty password too.
  $SUDO mysql -u root -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; CREATE DATABASE IF NOT EXISTS test;"
  wait_for mariadb mysql_ok 30
}

zk_up() {
  zk_ok && return 0
  if ! port_open $ZK_PORT; then
    $SUDO "$ZK_SERVER" start >/dev/null 2>&1
  fi
  wait_for zookeeper zk_ok 60
}

pg_up() {
  pg_ok && return 0
  local version
  version=$(pg_lsclusters -h 2>/dev/null | awk 'NR == 1 { print $1 }')
  if [ -z "$version" ]; then echo "no PostgreSQL cluster found (pg_lsclusters)" >&2; return 1; fi
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # The tests connect as postgres without a password over loopback, as DESIGN.md says.
  if ! $SUDO grep -q 'dlock-test' "$hba"; then
    $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust # dlock-test\nhost all postgres ::1/128 trust # dlock-test' "$hba"
  fi
  if ! port_open $PG_PORT; then
    $SUDO pg_ctlcluster "$version" main start >/dev/null
  else
    $SUDO pg_ctlcluster "$version" main reload >/dev/null
  fi
  wait_for postgres-port "port_open $PG_PORT" 60
  psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -qc 'CREATE DATABASE test' >/dev/null
  wait_for postgres pg_ok 30
}

etcd_up() {
  etcd_ok && return 0
  mkdir -p "$ETCD_DIR"
  # One member on loopback; started detached so it outlives this script.
  setsid etcd --name dlock-test --data-dir "$ETCD_DIR/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster dlock-test=http://127.0.0.1:2380 >"$ETCD_DIR/log" 2>&1 < /dev/null &
  wait_for etcd etcd_ok 30
}

status() {
  local rc=0
  if redis_ok; then echo "redis      up    127.0.0.1:$REDIS_PORT"; else echo "redis      DOWN  127.0.0.1:$REDIS_PORT"; rc=1; fi
  if mysql_ok; then echo "mariadb    up    127.0.0.1:$MYSQL_PORT (root, empty password, database test)"; else echo "mariadb    DOWN  127.0.0.1:$MYSQL_PORT"; rc=1; fi
  if zk_ok; then echo "zookeeper  up    127.0.0.1:$ZK_PORT"; else echo "zookeeper  DOWN  127.0.0.1:$ZK_PORT"; rc=1; fi
  if pg_ok; then echo "postgres   up    127.0.0.1:$PG_PORT (postgres, database test)"; else echo "postgres   DOWN  127.0.0.1:$PG_PORT"; rc=1; fi
  if etcd_ok; then echo "etcd       up    127.0.0.1:$ETCD_PORT"; else echo "etcd       DOWN  127.0.0.1:$ETCD_PORT"; rc=1; fi
  if ! command -v protoc >/dev/null; then echo "protoc     MISSING (apt-get install protobuf-compiler)"; rc=1; fi
  return $rc
}

case "${1:-up}" in
  up)
    if redis_ok && mysql_ok && zk_ok && pg_ok && etcd_ok && command -v protoc >/dev/null; then status; exit 0; fi
    install_missing
    redis_up & r=$!
    mysql_up & m=$!
    zk_up & z=$!
    pg_up & p=$!
    etcd_up & e=$!
    fail=0
    wait $r || fail=1
    wait $m || fail=1
    wait $z || fail=1
    wait $p || fail=1
    wait $e || fail=1
    status || fail=1
    exit $fail
    ;;
  status) status ;;
  down)
    redis-cli -h 127.0.0.1 -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true
    $SUDO service mariadb stop >/dev/null 2>&1 || true
    [ -x "$ZK_SERVER" ] && $SUDO "$ZK_SERVER" stop >/dev/null 2>&1 || true
    for v in $(pg_lsclusters -h 2>/dev/null | awk '{ print $1 }'); do
      $SUDO pg_ctlcluster "$v" main stop >/dev/null 2>&1 || true
    done
    pkill -f "etcd --name dlock-test" >/dev/null 2>&1 || true
    echo "stopped redis, mariadb, zookeeper, postgres, etcd"
    ;;
  *) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster from Debian's binaries, for tests and local runs.
#
#   scripts/postgres.sh start [DATADIR] [PORT]   initdb on first use, start, print the DSN
#   scripts/postgres.sh stop  [DATADIR]          fast shutdown (open sessions are ended)
#   scripts/postgres.sh status [DATADIR]
#
# Trust authentication on 127.0.0.1 only; the socket lives in DATADIR. postgres refuses to
# run as root, so as root the cluster belongs to and runs as the `postgres` user; DATADIR's
# parent directories must then be traversable by that user (e.g. under /tmp, not ~root).
set -euo pipefail

BIN=${POSTGRES_BIN:-/usr/lib/postgresql/15/bin}
COMMAND=${1:-}
DATADIR=${2:-${TMPDIR:-/tmp}/joulestream-postgres}
PORT=${3:-5432}

usage() {
  echo "usage: $0 start|stop|status [DATADIR] [PORT]" >&2
  exit 2
}

if [ ! -x "$BIN/pg_ctl" ]; then
  echo "postgres.sh: $BIN/pg_ctl not found; install Debian's postgresql-15" >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$COMMAND" in
start)
  if [ ! -f "$DATADIR/PG_VERSION" ]; then
    mkdir -p "$DATADIR"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DATADIR"; fi
    chmod 700 "$DATADIR"
    as_owner "$BIN/initdb" -D "$DATADIR" --auth=trust --username=postgres \
      --encoding=UTF8 --locale=C.UTF-8 >"$DATADIR.initdb.log" 2>&1 || {
      cat "$DATADIR.initdb.log" >&2
      exit 1
    }
  fi
  as_owner "$BIN/pg_ctl" -D "$DATADIR" -l "$DATADIR/server.log" -w -t 60 start \
    -o "-p $PORT -k $DATADIR -c listen_addresses=127.0.0.1" >/dev/null || {
    tail -n 20 "$DATADIR/server.log" >&2
    exit 1
  }
  echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
  ;;
stop)
  as_owner "$BIN/pg_ctl" -D "$DATADIR" -m fast -w -t 60 stop >/dev/null
  ;;
status)
  as_owner "$BIN/pg_ctl" -D "$DATADIR" status
  ;;
*)
  usage
  ;;
esac

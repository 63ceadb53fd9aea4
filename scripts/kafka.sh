#!/usr/bin/env bash
# A local Apache Kafka broker (KRaft, one node) on loopback ports, for the Kafka demo and tests.
#
#   scripts/kafka.sh start [DIR]   starts a broker with its data under DIR (default
#                                  ~/.cache/quiver-test/kafka-broker), waits until it accepts
#                                  connections, and prints its bootstrap address
#                                  (127.0.0.1:PORT) on stdout; the broker keeps running.
#   scripts/kafka.sh stop [DIR]    stops the broker started with that DIR (SIGTERM, then waits).
#   scripts/kafka.sh restart [DIR] stops it and starts it again on the same ports with the same
#                                  data (a broker restart under a running job).
#
# The jars come from Maven Central once (Kafka 4.4.0 and a log4j binding, ~43 MB) and are cached
# under ~/.cache/quiver-test/kafka-libs. Needs Java 17+ and Maven. Each start uses fresh free
# ports and a freshly formatted data directory: nothing of an earlier broker survives.
set -euo pipefail
CACHE="${QUIVER_TEST_CACHE:-$HOME/.cache/quiver-test}"
LIBS="$CACHE/kafka-libs"
KAFKA_VERSION=4.4.0
command_name="${1:-}"
DIR="${2:-$CACHE/kafka-broker}"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

fetch_jars() {
  if [ -f "$LIBS/.complete-$KAFKA_VERSION" ]; then
    return
  fi
  for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "kafka.sh: $tool not found; the local broker needs Java 17+ and Maven" >&2
      exit 1
    fi
  done
  echo "kafka.sh: fetching Kafka $KAFKA_VERSION from Maven Central into $LIBS (once)" >&2
  local pom_dir
  pom_dir=$(mktemp -d)
  cat >"$pom_dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>quiver.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.25.5</version>
    </dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIBS"
  (cd "$pom_dir" && mvn -q -B dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime) >&2
  rm -rf "$pom_dir"
  touch "$LIBS/.complete-$KAFKA_VERSION"
}

start() {
  fetch_jars
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    echo "kafka.sh: a broker is already running from $DIR (pid $(cat "$DIR/pid")); stop it first" >&2
    exit 1
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR/data"
  local port cport
  port=$(free_port)
  cport=$(free_port)
  while [ "$cport" = "$port" ]; do cport=$(free_port); done
  cat >"$DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  local id
  # A cluster id is a URL-safe base64 UUID; one starting with `-` would read as an option (1 in
  # 64 of them: the tool then fails), so draw again, as Kafka's own `random-uuid` does.
  id=$(python3 -c 'import base64, uuid
while True:
    id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not id.startswith("-"):
        print(id)
        break')
  java -cp "$LIBS/*" kafka.tools.StorageTool format -t "$id" -c "$DIR/server.properties" --standalone \
    >"$DIR/format.log" 2>&1 || {
    echo "kafka.sh: formatting the broker's storage failed; see $DIR/format.log" >&2
    exit 1
  }
  echo "127.0.0.1:$port" >"$DIR/bootstrap"
  launch
}

# Starts the broker of $DIR (configured and formatted) and waits until it accepts connections.
launch() {
  local port
  port=$(cut -d: -f2 "$DIR/bootstrap")
  # setsid: the broker outlives this script and is not hit by the caller's Ctrl-C.
  setsid java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$LIBS/*" kafka.Kafka \
    "$DIR/server.properties" >>"$DIR/broker.log" 2>&1 </dev/null &
  echo $! >"$DIR/pid"
  local deadline=$((SECONDS + 90))
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
      echo "kafka.sh: the broker did not start; see $DIR/broker.log" >&2
      exit 1
    fi
    sleep 0.3
  done
  echo "127.0.0.1:$port"
}

stop() {
  [ -f "$DIR/pid" ] || return 0
  local pid
  pid=$(cat "$DIR/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/pid"
}

restart() {
  if [ ! -f "$DIR/bootstrap" ]; then
    echo "kafka.sh: no broker was started from $DIR" >&2
    exit 1
  fi
  stop
  launch
}

case "$command_name" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  *)
    echo "usage: scripts/kafka.sh start|stop|restart [DIR]" >&2
    exit 2
    ;;
esac

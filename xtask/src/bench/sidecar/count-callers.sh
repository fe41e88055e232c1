#!/bin/bash
# Issue 13's counted figures for the sidecar (a benchmark tool, run by hand; not part of
# `cargo xtask bench`): user-space instructions (callgrind Ir), mallocs and syscalls (strace -c)
# per request of `eci-agent run`, for a trusted host caller and for a container caller under a
# deny list and under an allow list, and of HAProxy keep-alive with Tecnativa's rules for the
# host caller. Counts, unlike times, do not change when others load the machine.
#
# A container caller is classified by the agent's container table, which the engine fills, so
# the engine is a private dockerd here (its own data root in /tmp, never /var/run/docker.sock)
# and the caller is `loadgen` exec'd in a running container, the host's libc mounted read-only.
#
#   count-callers.sh "NAME=AGENT_BIN ..." LOADGEN_BIN OUT_DIR     (as root; needs valgrind)
#
# Writes OUT_DIR/summary: one line per case, "<name>-<caller>-<route>: Ir/req … mallocs/req …"
# and "…: syscalls/req …". Concurrency 10, 4 s counted after 2 s of warm-up, each agent
# restarted per case (callgrind, then without it for strace).
set -u
AGENTS=$1; LOADGEN=$2; OUT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
R=/tmp/eci-count-$$
mkdir -p $R/sock $R/rootfs/bin
D=$R/engine.sock
cleanup() {
  if [ -n "${APID:-}" ]; then kill $APID 2>/dev/null; wait $APID 2>/dev/null; fi
  if [ -n "${DPID:-}" ]; then
    docker rm -f caller >/dev/null 2>&1
    kill $DPID; wait $DPID
  fi
  for m in $(awk -v r=$R '$2 ~ "^"r {print $2}' /proc/mounts | sort -r); do umount $m; done
  rm -rf $R
}
trap cleanup EXIT
dockerd --host unix://$D --data-root $R/data --exec-root $R/exec --pidfile $R/dockerd.pid \
  --bridge none --iptables=false --ip6tables=false --storage-driver overlay2 >$R/dockerd.log 2>&1 &
DPID=$!
export DOCKER_HOST=unix://$D DOCKER_CONFIG=$R/cfg
for _ in $(seq 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
cp /usr/bin/busybox $R/rootfs/bin/; for a in sh sleep; do ln -s busybox $R/rootfs/bin/$a; done
tar -C $R/rootfs -c . | docker import -c 'ENV PATH=/bin' - eci-count:caller >/dev/null
cp "$LOADGEN" $R/sock/loadgen
# The caller container sees only the agent's socket directory (and the host's libc).
docker run -d --name caller --network none -v $R/sock:$R/sock \
  -v /lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro -v /lib64:/lib64:ro eci-count:caller \
  sleep 100000 >/dev/null
S=$R/sock/agent.sock

settings() { # list-type commands-json
  printf '{"configurationFileVersion":2,"enhancedContainerIsolation":{"locked":true,"value":true,"dockerSocketMount":{"imageList":{"images":["*"]},"commandList":{"type":"%s","commands":%s}}}}' \
    "$1" "$2" > $R/settings.json
}
start_agent() { # [wrapper...]
  rm -f $S
  RUST_LOG=info "$@" "$AGENT" run --settings $R/settings.json --listen $S --engine $D \
    --pin-dir $R/pins --allow-no-lsm --trust-cgroup / --cgroup-root /sys/fs/cgroup/unified \
    >$R/agent.log 2>&1 &
  APID=$!
  for _ in $(seq 600); do curl -sf --unix-socket $S http://x/_ping >/dev/null && break; sleep 0.2; done
}
stop_agent() { kill $APID; wait $APID 2>/dev/null; APID=; }
load() { # host|container socket path seconds
  local who=$1 socket=$2 path=$3 secs=$4
  if [ $who = host ]; then $R/sock/loadgen http $socket $path 10 $secs 0
  else docker exec caller $R/sock/loadgen http $socket $path 10 $secs 0; fi
}
requests() { python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["errors"]==0, d; print(d["requests"])'; }
# Ir and malloc/calloc/realloc calls per request from a callgrind dump.
per_request_ir() { # dump requests name
  python3 - "$@" <<'PY'
import re, sys
dump, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ir, allocs, names, callee = 0, 0, {}, None
for line in open(dump, errors="replace"):
    if line.startswith("summary:"):
        ir = int(line.split()[1])
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        if m.group(1):
            callee = names.get(m.group(2))
        continue
    if line.startswith("calls="):
        if callee in ("malloc", "calloc", "realloc"):
            allocs += int(line[6:].split()[0])
        callee = None
print(f"{name}: Ir/req {ir / n:.0f} mallocs/req {allocs / n:.2f} (n={n})")
PY
}
per_request_syscalls() { # strace-c-output requests name
  python3 - "$@" <<'PY'
import sys
f, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
per = {}
for line in open(f):
    p = line.split()
    if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
        per[p[-1]] = int(p[3])
top = sorted(per.items(), key=lambda kv: -kv[1])[:6]
print(f"{name}: syscalls/req {sum(per.values()) / n:.2f} " + " ".join(f"{k} {v / n:.2f}" for k, v in top) + f" (n={n})")
PY
}
count() { # name host|container path
  local name=$1 who=$2 path=$3 n dump sp
  start_agent valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.$name
  load $who $S $path 2 >/dev/null
  callgrind_control -z $APID >/dev/null
  load $who $S $path 4 > $OUT/load.$name
  callgrind_control -d $APID >/dev/null
  stop_agent
  n=$(requests < $OUT/load.$name) || { echo "$name: failed"; tail -5 $R/agent.log; return; }
  dump=$(ls $OUT/cg.$name.* | sort -t. -k3 -n | tail -1)
  per_request_ir $dump $n $name | tee -a $OUT/summary
  start_agent
  load $who $S $path 1 >/dev/null
  strace -c -f -qq -p $APID -o $OUT/strace.$name &
  sp=$!; sleep 1
  load $who $S $path 3 > $OUT/sysload.$name
  kill -INT $sp; wait $sp 2>/dev/null
  stop_agent
  n=$(requests < $OUT/sysload.$name) && per_request_syscalls $OUT/strace.$name $n $name | tee -a $OUT/summary
}

for spec in $AGENTS; do
  AGENT=${spec#*=}; AN=${spec%%=*}
  # The engine's highest API version here is 1.41.
  for path in /_ping /v1.41/containers/json; do
    p=$(basename $path)
    settings deny '["push","build"]'
    count $AN-host-$p host $path
    count $AN-deny-$p container $path
    settings allow '["ps","version","info","inspect"]'
    count $AN-allow-$p container $path
  done
done

# HAProxy keep-alive, Tecnativa's sections, in front of the same engine; host caller.
python3 - "$HERE/haproxy.cfg" "$D" "$R/sock/haproxy.sock" > $R/haproxy.cfg <<'PY'
import sys
# As xtask/src/bench/sidecar/templates.rs fills it (HAPROXY_SECTIONS), keep-alive mode.
on = {"containers", "events", "images", "info", "_ping", "version"}
sections = ["auth", "build", "commit", "configs", "containers", "distribution", "events", "exec",
            "grpc", "images", "info", "networks", "nodes", "_ping", "plugins", "secrets",
            "services", "session", "swarm", "system", "tasks", "version", "volumes"]
rules = "".join(
    f"    http-request allow if {{ path,url_dec -m reg -i ^(/v[\\d\\.]+)?(/\\w+)?/{s} }} "
    f"{{ {'always_true' if s in on else 'always_false'} }}\n" for s in sections)
t = open(sys.argv[1]).read()
for k, v in {"connection_mode": "http-keep-alive", "reuse": "    http-reuse always\n",
             "engine": sys.argv[2], "listen": sys.argv[3], "rules": rules}.items():
    t = t.replace("{" + k + "}", v)
print(t)
PY
H=$R/sock/haproxy.sock
for path in /_ping /v1.41/containers/json; do
  p=$(basename $path)
  valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.haproxy-$p haproxy -db -f $R/haproxy.cfg >$R/haproxy.log 2>&1 &
  HP=$!
  for _ in $(seq 100); do curl -sf --unix-socket $H http://x/_ping >/dev/null && break; sleep 0.2; done
  load host $H $path 2 >/dev/null
  callgrind_control -z $HP >/dev/null
  load host $H $path 4 > $OUT/load.haproxy-$p
  callgrind_control -d $HP >/dev/null
  kill $HP; wait $HP 2>/dev/null; rm -f $H
  n=$(requests < $OUT/load.haproxy-$p) || continue
  per_request_ir $(ls $OUT/cg.haproxy-$p.* | sort -t. -k3 -n | tail -1) $n haproxy-$p | tee -a $OUT/summary
done

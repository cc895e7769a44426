#!/bin/bash
# Records a busier host's benign activity for rules/baseline/busy-host.jsonl.gz
# (docs/rules.md). Run as root on a scratch machine, after `cargo build`:
# it installs packages, starts sshd on port 2222 and podman containers
# (image localhost/ctest: any image with /bin/true), and rotates logs.
# Then: python3 rules/baseline/filter-baseline.py /tmp/busy2.jsonl OUT &&
# gzip -9 OUT.
set -u
cd "$(dirname "$0")/../.."
AGENT=$PWD/target/debug/vigil-agent
OUT=/tmp/busy2.jsonl
podmanr() { podman --runtime runc run --rm --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 "$@"; }
# ssh set up before recording (the key install is itself a persistence act)
mkdir -p /root/.ssh && chmod 700 /root/.ssh
rm -f /tmp/busy_key /tmp/busy_key.pub; ssh-keygen -q -t ed25519 -N '' -f /tmp/busy_key 2>/dev/null || true
cp /root/.ssh/authorized_keys /tmp/ak.bak 2>/dev/null || true
cat /tmp/busy_key.pub >> /root/.ssh/authorized_keys
$AGENT run --events --spool-dir /tmp/bspool2 > $OUT 2>/tmp/busy2-agent.log &
A=$!
for i in $(seq 1 60); do grep -q "agent running" /tmp/busy2-agent.log && break; sleep 0.5; done
echo "== packages"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq logrotate rsync cowsay openssh-server >/dev/null 2>&1
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall hostname >/dev/null 2>&1
apt-get -s -qq dist-upgrade >/dev/null 2>&1
echo "== ssh"
mkdir -p /run/sshd; /usr/sbin/sshd -p 2222 -o PidFile=/tmp/busy-sshd.pid
sleep 1
for i in 1 2 3; do ssh -q -p 2222 -i /tmp/busy_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1 'id; uname -a; ls / >/dev/null; cat /etc/os-release >/dev/null' >/dev/null 2>&1; done
kill $(cat /tmp/busy-sshd.pid) 2>/dev/null
echo "== containers"
for i in 1 2 3; do podmanr localhost/ctest /bin/true; done
podmanr localhost/vigil-collector:0.1.0 --version >/dev/null 2>&1
mkdir -p /srv/app-data && echo x > /srv/app-data/x
podmanr -v /srv/app-data:/data localhost/ctest /bin/true
rm -rf /srv/app-data
echo "== cron jobs"
for j in dpkg man-db logrotate; do [ -x /etc/cron.daily/$j ] && /etc/cron.daily/$j >/dev/null 2>&1; done
echo "== log rotation"
logrotate -f /etc/logrotate.conf >/dev/null 2>&1
echo "== backups"
mkdir -p /var/backups/vigil-baseline
tar czf /var/backups/vigil-baseline/etc.tgz /etc 2>/dev/null
cp /var/backups/vigil-baseline/etc.tgz /tmp/etc-copy.tgz
tar czf /var/backups/vigil-baseline/home.tgz /home 2>/dev/null
rsync -a /etc/ /var/backups/vigil-baseline/etc-rsync/ 2>/dev/null
rm -rf /var/backups/vigil-baseline
echo "== restores and copies"
mkdir -p /tmp/restore && tar xzf /tmp/etc-copy.tgz -C /tmp/restore 2>/dev/null
rsync -a /etc/default/ /tmp/restore/default/ 2>/dev/null
rm -rf /tmp/restore
echo "== udp"
python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(50): s.sendto(b'metric:1|c', ('127.0.0.1', 8125))
" 2>/dev/null
echo "== CI build"
rm -f /tmp/etc-copy.tgz
rm -rf /tmp/ci-build && cargo new -q /tmp/ci-build && (cd /tmp/ci-build && cargo build -q 2>/dev/null && cargo test -q >/dev/null 2>&1); rm -rf /tmp/ci-build
sleep 3
kill $A; wait $A
# The key goes once the recording is over: editing authorized_keys is
# itself a persistence act.
if [ -f /tmp/ak.bak ]; then cp /tmp/ak.bak /root/.ssh/authorized_keys; else rm -f /root/.ssh/authorized_keys; fi
echo done

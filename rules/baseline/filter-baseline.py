# Shrinks a recorded --events stream into a baseline: plain reads outside
# the places rules look at are left out, and long arguments are cut.
import json, sys
KEEP_READ = ("/etc/", "/proc/", "/dev/", "/tmp/", "/var/tmp/", "/dev/shm/", "/var/log/",
             "/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/", "/root/.ssh/",
             "/home/", "/root/.")
def cut(v):
    if isinstance(v, list):
        return [x[:200] if isinstance(x, str) else x for x in v]
    return v
out = open(sys.argv[2], "w")
kept = dropped = 0
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except Exception:
        continue
    if v.get("type") == "file" and v.get("op") == "open":
        o = v.get("open") or {}
        if o.get("read") and not o.get("write") and not o.get("create") and not o.get("truncate"):
            if not v.get("path", "").startswith(KEEP_READ):
                dropped += 1
                continue
    if v.get("type") in ("alert", "lost", "heartbeat"):
        continue
    p = v.get("process") or {}
    if "argv" in p:
        p["argv"] = cut(p["argv"])
    for a in v.get("ancestry") or []:
        if "argv" in a:
            a["argv"] = cut(a["argv"])
    if "argv" in v:
        v["argv"] = cut(v["argv"])
    out.write(json.dumps(v, separators=(",", ":")) + "\n")
    kept += 1
print(f"kept {kept}, dropped {dropped} plain reads", file=sys.stderr)

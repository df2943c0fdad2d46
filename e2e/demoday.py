"""The demo's compressed day: e2e/loadsim replays the five apps' Monday (generated from
e2e/workloads/apps.yaml) in a few minutes while the operator scales them; halfway through
the morning peak west's API server is killed, and revived a minute later. Prints a line
per app every few seconds: the day's clock, replicas, traffic split. Run by e2e/demo.

Needs the lab up and the operator running on it (e2e/demo does both)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

E2E = Path(__file__).resolve().parent
sys.path.insert(0, str(E2E / "bench"))

from harness import GROUP, VERSION, api, lab, lab_env  # noqa: E402
from kubernetes import client  # noqa: E402

APPS = ("ide-assistant", "aiops-platform", "code-review", "hybrid-reasoning",
        "unit-test-agent")


def line(objects: client.CustomObjectsApi, clock: str) -> str:
    parts = []
    for name in APPS:
        try:
            md: dict[str, Any] = objects.get_namespaced_custom_object(
                GROUP, VERSION, "ai-platform", "modeldeployments", name, _request_timeout=2)
        except Exception:
            parts.append(f"{name}: ?")
            continue
        s = md.get("status") or {}
        primary = sum(z["desired"] for c in s.get("clusters") or [] for z in c["zones"].values())
        parts.append(f"{name.split('-')[0]}={primary} [{s.get('trafficSplit', '-')}]")
    return f"{clock}  " + "  ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="08:00")
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--compress", type=float, default=120.0)
    parser.add_argument("--kill-at", default="10:00", help="day's time west is killed")
    parser.add_argument("--down-for", type=float, default=60.0, help="seconds west is down")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between lines")
    parser.add_argument("--load-factor", type=float, default=300.0,
                        help="volumes x F (the benchmark's 150 leaves ide-assistant at its "
                             "floor; 300 makes it scale at its peaks)")
    args = parser.parse_args()
    env = lab_env()
    objects = client.CustomObjectsApi(api(env["TWINHULL_HUB_KUBECONFIG"]))
    h, m = (int(x) for x in args.start.split(":"))
    begin = h * 3600 + m * 60
    kh, km = (int(x) for x in args.kill_at.split(":"))
    kill_after = (kh * 3600 + km * 60 - begin) / args.compress
    sim = subprocess.Popen(
        [sys.executable, str(E2E / "loadsim"), "--apps", str(E2E / "workloads" / "apps.yaml"),
         "--start", args.start, "--hours", str(args.hours), "--compress", str(args.compress),
         "--load-factor", str(args.load_factor)],
        env={**env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    length = args.hours * 3600 / args.compress
    print(f"[demo] replaying Monday {args.start} + {args.hours:g} h in {length:.0f} s "
          f"(x{args.compress:g}); west is killed at {args.kill_at} for {args.down_for:g} s",
          flush=True)
    killed = revived = False
    start = time.monotonic()
    try:
        assert sim.stdout is not None
        first = sim.stdout.readline()
        if not re.search(r"metrics on", first):
            print(f"[demo] loadsim did not start: {first}", file=sys.stderr)
            return 1
        while sim.poll() is None:
            elapsed = time.monotonic() - start
            if not killed and elapsed >= kill_after:
                lab("kill", "west")
                killed, killed_at = True, elapsed
                print("[demo] >>> west's API server killed", flush=True)
            if killed and not revived and elapsed >= killed_at + args.down_for:
                lab("revive", "west")
                revived = True
                print("[demo] >>> west revived: traffic returns in steps", flush=True)
            day = begin + elapsed * args.compress
            clock = f"{int(day // 3600) % 24:02d}:{int(day % 3600 // 60):02d}"
            print(line(objects, clock), flush=True)
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        if killed and not revived:
            lab("revive", "west")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Bounded load test of `mrsampler serve` on loopback (standard library only).

    python3 tools/serve_load.py --url http://127.0.0.1:8080 --images assets/eval/test/degraded \
        [--clients 1,4,16] [--requests 16] [--nfe 10] [--pid PID] [--faults 40]

For each client count C: `--requests` requests (the images in turn), sent by C client threads
that each wait for their answer before sending the next. Prints throughput (images/s) and the
p50/p99 latency, and the server's batch sizes from /metrics. With `--faults N`, then sends N
faulty requests (clients that disconnect mid-request, malformed bodies, oversize bodies) and
checks that the server still answers, with its resident memory (`--pid`) before and after.
"""
import argparse
import glob
import http.client
import json
import os
import socket
import statistics
import threading
import time
import urllib.parse


def rss_mib(pid):
    """Resident memory of `pid` in MiB (Linux), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def post(host, port, query, body, timeout=600):
    """POST /v1/restore?query: (status, seconds)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.request("POST", f"/v1/restore?{query}", body=body,
                 headers={"Content-Type": "image/png"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - start


def metrics(host, port):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def percentile(values, q):
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def load(host, port, images, clients, requests, nfe):
    """Sends `requests` requests from `clients` threads; returns (wall, latencies, statuses)."""
    latencies, statuses, lock = [], [], threading.Lock()
    counter = iter(range(requests))

    def client():
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            name, body = images[k % len(images)]
            query = urllib.parse.urlencode({"nfe": nfe, "seed": k, "name": name})
            status, seconds = post(host, port, query, body)
            with lock:
                latencies.append(seconds)
                statuses.append(status)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, statuses


def faults(host, port, body, count):
    """Disconnecting clients, malformed and oversize bodies; returns the statuses seen."""
    seen = []
    for k in range(count):
        kind = k % 3
        if kind == 0:
            # Send a whole request, then hang up before the answer.
            s = socket.create_connection((host, port))
            head = (f"POST /v1/restore?nfe=10&seed={k} HTTP/1.1\r\nHost: x\r\n"
                    f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n")
            s.sendall(head.encode() + body)
            time.sleep(0.05)
            s.close()
            seen.append("disconnected")
        elif kind == 1:
            status, _ = post(host, port, "nfe=10", os.urandom(5000))
            seen.append(status)
        else:
            # Over --max-body: the server answers 413 and closes the connection while the body is
            # still being sent, which the client sees as a reset.
            try:
                status, _ = post(host, port, "nfe=10", b"\x89PNG" + os.urandom(40 << 20))
                seen.append(status)
            except (BrokenPipeError, ConnectionResetError):
                seen.append("closed mid-body")
    return seen


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--images", required=True, help="a folder of PNG files")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--pid", type=int, help="the server's process id (memory check)")
    p.add_argument("--faults", type=int, default=0)
    args = p.parse_args()
    url = urllib.parse.urlparse(args.url)
    host, port = url.hostname, url.port
    files = sorted(glob.glob(os.path.join(args.images, "*.png")))
    images = [(os.path.basename(f), open(f, "rb").read()) for f in files]
    print(f"{len(images)} images, {args.requests} requests per level, nfe {args.nfe}")
    print("| clients | images/s | p50 latency (s) | p99 latency (s) | mean batch | statuses |")
    print("|---|---|---|---|---|---|")
    for clients in [int(c) for c in args.clients.split(",")]:
        before = metrics(host, port)
        wall, lat, statuses = load(host, port, images, clients, args.requests, args.nfe)
        after = metrics(host, port)
        calls = after["mrsampler_batch_size_count"] - before.get("mrsampler_batch_size_count", 0)
        samples = after["mrsampler_batch_size_sum"] - before.get("mrsampler_batch_size_sum", 0)
        codes = {c: statuses.count(c) for c in sorted(set(statuses))}
        print(f"| {clients} | {args.requests / wall:.3f} | {statistics.median(lat):.2f} | "
              f"{percentile(lat, 0.99):.2f} | {samples / max(calls, 1):.2f} | {codes} |")
    if args.faults:
        rss0 = rss_mib(args.pid) if args.pid else None
        seen = faults(host, port, images[0][1], args.faults)
        time.sleep(2)
        status, _ = post(host, port, "nfe=2", images[0][1])
        rss1 = rss_mib(args.pid) if args.pid else None
        m = metrics(host, port)
        outcomes = {k: v for k, v in m.items() if k.startswith("mrsampler_requests_total")}
        print(json.dumps({
            "faults": {str(s): seen.count(s) for s in set(seen)},
            "after_faults_status": status,
            "rss_mib_before": rss0, "rss_mib_after": rss1,
            "running": m.get("mrsampler_running"), "queued": m.get("mrsampler_queue_depth"),
            "outcomes": outcomes,
        }, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Soak and chaos run against a real engram-memory + engram-worker (not a test; a campaign).

    /usr/bin/python3 scripts/soak.py --minutes 60                 # the documented run
    /usr/bin/python3 scripts/soak.py --minutes 5 --chaos-every 60 # a quick look

Starts both servers on localhost with the demo model (models/demo-cpu, tables imported into a
scratch store, as scripts/run-demo.sh does), drives mixed load at them and, every --chaos-every
seconds, does one of: SIGKILL the tier and restart it, SIGSTOP the tier for 15 s then SIGCONT,
restart the worker (SIGTERM drain, or SIGKILL). Load: --clients threads, each sending in turn gRPC
Generate (streamed), gRPC Tokenize, HTTP /v1/completions (streamed or not) and HTTP chat, with
prompts of every size: a word, a sentence, a paragraph, near the context window, over it, and
1 MiB / 8 MiB texts that must be refused early.

Reports, at the end (stdout, and --report FILE as JSON):
  * requests completed, failed by code (gRPC code names, HTTP statuses), and hung. A request is
    hung when no answer (not even an error) came within its deadline + 30 s: that must be 0;
  * the RSS of each server process incarnation: first and last sample, its maximum, and the slope
    of a least-squares line over its second half (MiB/hour; flat means within noise);
  * after every tier restart and at the end: shared-memory objects of the run's prefix in
    /dev/shm that no live tier owns (orphans; must be 0).
Needs python3-grpcio (Debian) and a build (default build/).

    /usr/bin/python3 scripts/soak.py --large-requests   # the worker's RSS around large requests

measures instead, without chaos: the worker's RSS idle, right after 4 concurrent Tokenize calls
of ~4 MiB of text (the default receive limit) and 5 s later, three rounds.
"""
import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GRACE_S = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Server:
    """One server process that can be killed, stopped and restarted; RSS sampled per incarnation."""

    def __init__(self, name, argv, log_dir, ready):
        self.name, self.argv, self.log_dir, self.ready = name, argv, log_dir, ready
        self.proc = None
        self.incarnations = []  # [{"start": t, "samples": [(t, kib)], "end": how}]
        self.lock = threading.Lock()

    def start(self):
        n = len(self.incarnations)
        log = open(os.path.join(self.log_dir, f"{self.name}.{n}.log"), "w")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        with self.lock:
            self.incarnations.append({"start": time.time(), "pid": self.proc.pid, "samples": [], "end": None})
        if not self.ready(120):
            raise RuntimeError(f"{self.name} did not become ready; see {log.name}")

    def sample(self):
        with self.lock:
            if self.proc is None or self.proc.poll() is not None or not self.incarnations:
                return
            kib = rss_kib(self.proc.pid)
            if kib is not None:
                self.incarnations[-1]["samples"].append((time.time(), kib))

    def _ended(self, how):
        with self.lock:
            if self.incarnations and self.incarnations[-1]["end"] is None:
                self.incarnations[-1]["end"] = how

    def kill(self):
        self._ended("SIGKILL")
        self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout=60):
        self._ended("SIGTERM")
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after SIGTERM timeout"

    def signal(self, sig):
        self.proc.send_signal(sig)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def health_waiter(engram, address):
    def ready(timeout):
        return subprocess.run([engram, "health", "--server", address, "--wait", str(int(timeout))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    return ready


def slope_mib_per_hour(samples):
    """Least-squares slope of the second half of (t, KiB) samples, in MiB/hour."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return None
    t0 = half[0][0]
    xs = [t - t0 for t, _ in half]
    ys = [k / 1024.0 for _, k in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600.0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = collections.defaultdict(collections.Counter)  # kind -> outcome -> n
        self.in_flight = {}  # id -> (start, deadline_s, kind)
        self.hung = []
        self.next_id = 0

    def begin(self, kind, deadline_s):
        with self.lock:
            self.next_id += 1
            self.in_flight[self.next_id] = (time.time(), deadline_s, kind)
            return self.next_id

    def end(self, rid, kind, outcome):
        with self.lock:
            self.in_flight.pop(rid, None)
            self.by_kind[kind][outcome] += 1

    def check_hung(self, final=False):
        now = time.time()
        with self.lock:
            for rid, (start, deadline, kind) in list(self.in_flight.items()):
                if now - start > deadline + HANG_GRACE_S:
                    self.hung.append({"kind": kind, "age_s": round(now - start, 1)})
                    del self.in_flight[rid]


PARAGRAPH = ("And God said unto Moses, I AM THAT I AM: and he said, Thus shalt thou say unto the "
             "children of Israel. The state of the Union is strong, and the people are free. ")


def prompt_of(size_class, rng, context_tokens):
    if size_class == "word":
        return rng.choice(["Once", "The", "And", "Hello", "God"])
    if size_class == "sentence":
        return "Once upon a time, in a land far away, there lived a king who"
    if size_class == "paragraph":
        return PARAGRAPH * rng.randint(1, 4)
    if size_class == "near_context":  # ~3-4 bytes per token on English text with this vocabulary
        return (PARAGRAPH * 200)[: int(context_tokens * 2.5)]
    if size_class == "over_context":
        return (PARAGRAPH * 400)[: context_tokens * 8]
    if size_class == "1MiB":
        return ("x" * 1023 + " ") * 1024
    if size_class == "8MiB":
        return ("y" * 1023 + " ") * 8192
    raise ValueError(size_class)


SIZE_WEIGHTS = [("word", 20), ("sentence", 30), ("paragraph", 25), ("near_context", 10),
                ("over_context", 6), ("1MiB", 6), ("8MiB", 3)]


class Load:
    def __init__(self, args, grpc_mod, pb, rpc, worker_addr, http_port, context_tokens, stats):
        self.args, self.grpc, self.pb, self.rpc = args, grpc_mod, pb, rpc
        self.worker_addr, self.http_port, self.context = worker_addr, http_port, context_tokens
        self.stats = stats
        self.stop = threading.Event()

    def channel(self):
        return self.grpc.insecure_channel(self.worker_addr, options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])

    def run_client(self, seed):
        rng = random.Random(seed)
        ch = self.channel()
        stub = self.rpc.InferenceStub(ch)
        while not self.stop.is_set():
            size = rng.choices([s for s, _ in SIZE_WEIGHTS], [w for _, w in SIZE_WEIGHTS])[0]
            text = prompt_of(size, rng, self.context)
            kind = rng.choices(["grpc_generate", "grpc_tokenize", "http_completion", "http_stream",
                                "http_chat"], [40, 10, 25, 20, 5])[0]
            max_tokens = rng.choice([1, 8, 32, 128])
            deadline = 60.0
            rid = self.stats.begin(kind, deadline)
            try:
                outcome = getattr(self, kind)(stub, text, max_tokens, deadline, rng)
            except Exception as e:  # the tool's own bug or an unexpected transport error
                outcome = f"exception:{type(e).__name__}"
            self.stats.end(rid, f"{kind}/{size}", outcome)
        ch.close()

    def grpc_generate(self, stub, text, max_tokens, deadline, rng):
        req = self.pb.GenerateRequest(text=text, stopping=self.pb.StoppingCriteria(max_tokens=max_tokens),
                                      sampling=self.pb.SamplingParams(temperature=rng.choice([0.0, 0.8]),
                                                                      seed=rng.randrange(1 << 30)))
        try:
            n = 0
            for r in stub.Generate(req, timeout=deadline):
                n += len(r.token_ids)
                if self.stop.is_set():
                    break
            return "OK"
        except self.grpc.RpcError as e:
            return e.code().name

    def grpc_tokenize(self, stub, text, max_tokens, deadline, rng):
        try:
            stub.Tokenize(self.pb.TokenizeRequest(text=text), timeout=deadline)
            return "OK"
        except self.grpc.RpcError as e:
            return e.code().name

    def _http(self, path, body, deadline, stream):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=deadline + HANG_GRACE_S / 2)
        try:
            c.request("POST", path, json.dumps(body), {"Content-Type": "application/json",
                                                      "X-Request-Timeout": str(deadline)})
            r = c.getresponse()
            data = r.read()
            if r.status == 200 and stream and not data.rstrip().endswith(b"data: [DONE]"):
                # A stream that ends with an error event instead of [DONE].
                return "200-stream-error"
            return str(r.status)
        except socket.timeout:
            return "client-timeout"
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            return f"conn:{type(e).__name__}"
        finally:
            c.close()

    def http_completion(self, stub, text, max_tokens, deadline, rng):
        return self._http("/v1/completions", {"prompt": text, "max_tokens": max_tokens,
                                              "temperature": rng.choice([0, 0.7])}, deadline, False)

    def http_stream(self, stub, text, max_tokens, deadline, rng):
        return self._http("/v1/completions", {"prompt": text, "max_tokens": max_tokens, "stream": True},
                          deadline, True)

    def http_chat(self, stub, text, max_tokens, deadline, rng):
        return self._http("/v1/chat/completions", {"messages": [{"role": "user", "content": text}],
                                                   "max_tokens": max_tokens}, deadline, False)


def large_requests(grpc, pb, rpc, address, worker):
    """Worker RSS (MiB) idle, just after 4 concurrent ~4 MiB Tokenize calls, and 5 s later."""
    ch = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20),
                                                 ("grpc.max_receive_message_length", 256 << 20)])
    stub = rpc.InferenceStub(ch)
    text = (PARAGRAPH * 30000)[: (4 << 20) - 4096]
    mib = lambda: round(rss_kib(worker.proc.pid) / 1024, 1)
    rows = [("idle", mib())]
    for round_ in range(3):
        results = []
        def call():
            try:
                results.append(len(stub.Tokenize(pb.TokenizeRequest(text=text), timeout=300).ids))
            except grpc.RpcError as e:
                results.append(e.code().name)
        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        peak = 0.0
        while any(t.is_alive() for t in threads):
            peak = max(peak, mib())
            time.sleep(0.05)
        rows.append((f"round {round_ + 1}: peak during the calls", peak))
        rows.append((f"round {round_ + 1}: right after ({results[0]} ids each)", mib()))
        time.sleep(5)
        rows.append((f"round {round_ + 1}: 5 s later", mib()))
    ch.close()
    for what, v in rows:
        print(f"{what:45s} {v:8.1f} MiB")
    return 0


def shm_objects(prefix):
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--chaos-every", type=float, default=180, help="seconds between chaos events")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo-cpu"))
    ap.add_argument("--rows-timeout", default="3s")
    ap.add_argument("--worker-threads", type=int, default=1, help="worker --threads (CPU backbone)")
    ap.add_argument("--report", default="")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--large-requests", action="store_true",
                    help="measure the worker's RSS around large requests instead of soaking")
    args = ap.parse_args()

    import grpc  # python3-grpcio (Debian)
    work = tempfile.mkdtemp(prefix="engram-soak.")
    subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), f"--python_out={work}", f"--grpc_out={work}",
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                    os.path.join(ROOT, "proto", "engram", "v1", "inference.proto")], check=True)
    sys.path.insert(0, work)
    from engram.v1 import inference_pb2 as pb, inference_pb2_grpc as rpc

    engram = os.path.join(args.build, "client", "engram")
    store = os.path.join(work, "store")
    subprocess.run([engram, "table", "import", args.model, "--store", store], check=True,
                   stdout=subprocess.DEVNULL)
    shm_prefix = f"engram-soak-{os.getpid()}"
    tier_port, worker_port, http_port = free_port(), free_port(), free_port()
    tier = Server("memory", [os.path.join(args.build, "memory_tier", "engram-memory"), "--store", store,
                             "--listen", f"127.0.0.1:{tier_port}", "--metrics-port", "0",
                             "--metrics-host", "127.0.0.1", "--shm-prefix", shm_prefix, "--mlock=false",
                             "--dram-bytes", "64M"],
                  work, health_waiter(engram, f"127.0.0.1:{tier_port}"))
    worker = Server("worker", [os.path.join(args.build, "server", "engram-worker"), "--model", args.model,
                               "--memory", f"127.0.0.1:{tier_port}", "--listen", f"127.0.0.1:{worker_port}",
                               "--metrics-port", "0", "--metrics-host", "127.0.0.1",
                               "--http-host", "127.0.0.1", "--http-port", str(http_port),
                               "--rows-timeout", args.rows_timeout, "--threads", str(args.worker_threads),
                               "--drain-timeout", "20s", "--device", "cpu"],
                    work, health_waiter(engram, f"127.0.0.1:{worker_port}"))
    tier.start()
    worker.start()
    context = json.load(open(os.path.join(args.model, "config.json"))).get("max_position_embeddings", 2048)
    if args.large_requests:
        try:
            return large_requests(grpc, pb, rpc, f"127.0.0.1:{worker_port}", worker)
        finally:
            worker.terminate()
            tier.terminate()
            shutil.rmtree(work, ignore_errors=True)

    stats = Stats()
    load = Load(args, grpc, pb, rpc, f"127.0.0.1:{worker_port}", http_port, context, stats)
    threads = [threading.Thread(target=load.run_client, args=(args.seed * 1000 + i,), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()

    events, orphans = [], []
    rng = random.Random(args.seed)
    start = time.time()
    end = start + args.minutes * 60
    next_chaos = start + args.chaos_every
    chaos_cycle = ["tier_sigkill", "tier_sigstop", "worker_sigterm", "tier_sigkill", "worker_sigkill"]
    chaos_i = 0

    def live_shm():
        # What a live tier owns: everything under the prefix while it runs (its arenas).
        return set(shm_objects(shm_prefix)) if tier.alive() else set()

    try:
        while time.time() < end:
            time.sleep(5)
            tier.sample()
            worker.sample()
            stats.check_hung()
            if time.time() < next_chaos:
                continue
            what = chaos_cycle[chaos_i % len(chaos_cycle)]
            chaos_i += 1
            t0 = time.time()
            note = ""
            if what == "tier_sigkill":
                before = shm_objects(shm_prefix)
                tier.kill()
                time.sleep(rng.uniform(1, 3))
                tier.start()
                after = shm_objects(shm_prefix)
                # A restarted tier must have removed the dead one's objects (or reused them).
                stale = sorted(set(before) - set(after))
                note = f"shm before {len(before)} after {len(after)}; left behind {stale}"
                if stale:
                    orphans.append({"event": len(events), "names": stale})
            elif what == "tier_sigstop":
                tier.signal(signal.SIGSTOP)
                time.sleep(15)
                tier.signal(signal.SIGCONT)
            elif what == "worker_sigterm":
                note = f"exit {worker.terminate()}"
                worker.start()
            elif what == "worker_sigkill":
                worker.kill()
                time.sleep(1)
                worker.start()
            events.append({"t_s": round(t0 - start), "event": what, "took_s": round(time.time() - t0, 1),
                           "note": note})
            print(f"[{round(t0 - start):5d}s] {what} ({events[-1]['took_s']} s) {note}", flush=True)
            next_chaos = time.time() + args.chaos_every
    finally:
        load.stop.set()
        for t in threads:
            t.join(90)
        stats.check_hung()
        with stats.lock:
            still = list(stats.in_flight.values())
        stats.hung.extend({"kind": k, "age_s": round(time.time() - s, 1), "at_end": True}
                          for s, d, k in still if time.time() - s > d + HANG_GRACE_S)
        worker_exit = worker.terminate()
        tier_exit = tier.terminate()
        left = shm_objects(shm_prefix)
        if left:
            orphans.append({"event": "final (after SIGTERM of the tier)", "names": left})

    totals = collections.Counter()
    for kind, c in stats.by_kind.items():
        totals.update(c)
    rss = {}
    for s in (tier, worker):
        rss[s.name] = []
        for inc in s.incarnations:
            smp = inc["samples"]
            if not smp:
                continue
            rss[s.name].append({
                "lived_s": round(smp[-1][0] - inc["start"]), "first_mib": round(smp[0][1] / 1024, 1),
                "last_mib": round(smp[-1][1] / 1024, 1), "max_mib": round(max(k for _, k in smp) / 1024, 1),
                "slope_mib_per_h_second_half": (None if slope_mib_per_hour(smp) is None
                                                 else round(slope_mib_per_hour(smp), 1)),
                "end": inc["end"]})
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "minutes": round((time.time() - start) / 60, 1),
        "clients": args.clients, "chaos_every_s": args.chaos_every, "requests": sum(totals.values()),
        "outcomes": dict(totals.most_common()), "hung": stats.hung, "events": events, "rss": rss,
        "shm_orphans": orphans, "worker_exit": str(worker_exit), "tier_exit": str(tier_exit),
        "by_kind": {k: dict(v) for k, v in sorted(stats.by_kind.items())}, "logs": work,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "by_kind"}, indent=1))
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    ok = not stats.hung and not orphans
    print("soak:", "OK" if ok else "FAILED", f"(hung {len(stats.hung)}, shm orphans {len(orphans)})")
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

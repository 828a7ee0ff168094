#!/usr/bin/env python3
"""A real HTTP client of the worker's OpenAI-compatible API, on Python's http.client only (the
`openai` package is not in Debian). worker_http_test runs it; each scenario prints one JSON object
per line on stdout.

  openai_client.py PORT request METHOD PATH [BODY_JSON] [HEADERS_JSON]
      one request: {"status", "headers", "body"} (body parsed as JSON when it is JSON);
      {"status": -1, "error"} when the connection fails
  openai_client.py PORT stream PATH BODY_JSON [HEADERS_JSON]
      a streaming request read as server-sent events: {"status", "content_type", "events": [...],
      "done": true when the stream ended with "data: [DONE]", "after_done": data after it}
  openai_client.py PORT concurrent N BODY_JSON
      N streams at once, one thread each; BODY_JSON's prompt is formatted with the stream's index
      ({i}): {"results": [{"status", "text", "finish_reason", "done"[, "error"]}, ...]}
  openai_client.py PORT hold RELEASE_FILE BODY_JSON QUEUED_FILE
      opens two streams and reads their first chunk (both run), sends a third and prints
      {"queued_sent": true}; once QUEUED_FILE exists (the caller saw the worker queue it) sends a
      fourth request and prints {"overload": {"status", "headers", "body"}}; waits until
      RELEASE_FILE exists, then drops every connection without reading on and prints {"released": true}
  openai_client.py PORT connections N RELEASE_FILE
      opens N idle connections, then sends GET /v1/models on one more and prints
      {"overflow": {"status", "body"}}; waits for RELEASE_FILE, closes all, prints {"released": true}
"""
import http.client
import json
import os
import socket
import sys
import threading
import time


def out(obj):
    print(json.dumps(obj), flush=True)


def parse(body):
    try:
        return json.loads(body)
    except ValueError:
        return body


def request(port, method, path, body=None, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read().decode("utf-8", "replace")
    conn.close()
    return {"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()},
            "body": parse(data)}


def read_events(resp):
    """Server-sent events until [DONE] or the end of the stream."""
    events, done, after_done = [], False, []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\r\n")
        if not line.startswith("data: "):
            continue  # blank separators (and comments)
        data = line[len("data: "):]
        if done:
            after_done.append(data)
        elif data == "[DONE]":
            done = True
        else:
            events.append(json.loads(data))
    return events, done, after_done


def stream(port, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", path, body=body, headers=h)
    resp = conn.getresponse()
    result = {"status": resp.status, "content_type": resp.getheader("Content-Type")}
    if resp.status != 200:
        result["body"] = parse(resp.read().decode("utf-8", "replace"))
    else:
        result["events"], result["done"], result["after_done"] = read_events(resp)
    conn.close()
    return result


def text_of(events):
    text, reason = "", None
    for e in events:
        for c in e.get("choices", []):
            text += c.get("text") or c.get("delta", {}).get("content") or ""
            reason = c.get("finish_reason") or reason
    return text, reason


def concurrent(port, n, body):
    template = json.loads(body)
    results = [None] * n

    def run(i):
        b = dict(template)
        b["prompt"] = template["prompt"].format(i=i)
        try:
            r = stream(port, "/v1/completions", json.dumps(b))
            text, reason = text_of(r.get("events", []))
            results[i] = {"status": r["status"], "text": text, "finish_reason": reason,
                          "done": r.get("done", False)}
            # A stream the server ended early carries an error event instead of a finish_reason.
            errors = [e["error"] for e in r.get("events", []) if "error" in e]
            if errors:
                results[i]["error"] = errors[0]
        except Exception as e:  # reported, not raised: the test names the stream
            results[i] = {"status": -1, "error": repr(e)}

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"results": results}


def open_stream(port, body):
    """Sends a streaming request on a raw socket; returns the socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    data = body.encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return s


def read_until(s, needle):
    buf = b""
    while needle not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before %r: %r" % (needle, buf[:500]))
        buf += chunk
    return buf


def wait_for(path):
    deadline = time.time() + 120
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.02)


def drop(sockets):
    for s in sockets:
        # RST instead of FIN: the abrupt end a killed client leaves behind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


def hold(port, release, body, queued_seen):
    running = [open_stream(port, body) for _ in range(2)]
    for s in running:
        read_until(s, b"data: ")
    queued = open_stream(port, body)
    out({"queued_sent": True})
    wait_for(queued_seen)  # the test saw the worker queue it (its queue-length gauge)
    overload = request(port, "POST", "/v1/completions", body)
    out({"overload": overload})
    wait_for(release)
    drop(running + [queued])
    out({"released": True})


def connections(port, n, release):
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
    time.sleep(0.3)  # every idle connection holds a thread now
    overflow = request(port, "GET", "/v1/models", timeout=30)
    out({"overflow": {"status": overflow["status"], "body": overflow["body"]}})
    wait_for(release)
    for s in idle:
        s.close()
    out({"released": True})


def main():
    port, scenario, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if scenario == "request":
        body = args[2] if len(args) > 2 else None
        headers = json.loads(args[3]) if len(args) > 3 else None
        try:
            out(request(port, args[0], args[1], body, headers))
        except (ConnectionError, http.client.HTTPException) as e:
            out({"status": -1, "error": repr(e)})
    elif scenario == "stream":
        headers = json.loads(args[2]) if len(args) > 2 else None
        out(stream(port, args[0], args[1], headers))
    elif scenario == "concurrent":
        out(concurrent(port, int(args[0]), args[1]))
    elif scenario == "hold":
        hold(port, args[0], args[1], args[2])
    elif scenario == "connections":
        connections(port, int(args[0]), args[1])
    else:
        sys.exit("unknown scenario " + scenario)


if __name__ == "__main__":
    main()

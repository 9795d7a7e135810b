"""Throwaway OTLP/HTTP trace sink: answers 200 (an empty protobuf
ExportTraceServiceResponse) to every POST and counts what it received, so
trace export can be switched on in a benchmark without a collector.

    python3 bench/otlp_sink.py --listen 127.0.0.1:4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf gateway ...

The totals are printed to standard error on SIGINT/SIGTERM and every 10 s.
"""

import argparse
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

totals = {"requests": 0, "bytes": 0}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        with lock:
            totals["requests"] += 1
            totals["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def report():
    print(f"otlp sink: {totals['requests']} export requests, {totals['bytes']} bytes", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:4318")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Sink)

    def stop(*_):
        report()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def tick():
        while True:
            time.sleep(10)
            report()

    threading.Thread(target=tick, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()

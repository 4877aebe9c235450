#!/usr/bin/env python3
"""A webhook receiver for the event tests, checking every delivery with an independent Standard
Webhooks implementation (the `standardwebhooks` package from PyPI). It binds a port and prints
it, stays down (the port refuses connections) for --down-secs, then refuses a share of the
deliveries at random (--refuse, seeded) with a 500 and accepts the rest with a 204. Each accepted
event, its signature verified, is one JSON line of --out; a delivery whose signature does not
verify is answered 400 and counted in --out as {"bad_signature": ...}.

Usage: webhook-receiver.py --secret whsec_... --out FILE [--down-secs S] [--refuse 0.33] [--seed N]
"""
import argparse
import http.server
import json
import random
import socket
import sys
import threading
import time

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--down-secs", type=float, default=0.0)
    parser.add_argument("--refuse", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    webhook = Webhook(args.secret)
    chance = random.Random(args.seed)
    lock = threading.Lock()
    out = open(args.out, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, status):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            with lock:
                refuse = chance.random() < args.refuse
                try:
                    webhook.verify(body, headers)
                except WebhookVerificationError as error:
                    out.write(json.dumps({"bad_signature": str(error)}) + "\n")
                    self.answer(400)
                    return
                if refuse:
                    self.answer(500)
                    return
                event = json.loads(body)
                if headers.get("webhook-id") != event["id"]:
                    out.write(json.dumps({"bad_signature": "webhook-id is not the event id"}) + "\n")
                    self.answer(400)
                    return
                out.write(json.dumps({
                    "id": event["id"], "saleid": event["saleid"], "sequence": event["sequence"],
                    "type": event["type"], "subject": event["subject"],
                    "content_type": headers.get("content-type"),
                }) + "\n")
                self.answer(204)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    # Bound but not listening: connections are refused, as by a receiver that is down.
    time.sleep(args.down_secs)
    listener.listen(128)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TEST DOUBLE of BlueMind's bm-nginx (its HTTPS front end), for the lab only.

Run by the stand-in bm-nginx.service. HTTPS on port 443 with the certificate the
package's postinst made (/etc/ssl/certs/bm_cert.pem: key and certificate, like BlueMind's);
/api/* goes to bm-core (127.0.0.1:8090), 502 when bm-core does not answer; / answers
a small page. SIGTERM stops it cleanly (exit 0).

Environment (the unit reads /etc/default/bm-nginx): BM_NGINX_BIND (0.0.0.0),
BM_NGINX_PORT (443), BM_NGINX_UPSTREAM (127.0.0.1:8090), BM_NGINX_CERT, BM_NGINX_KEY.
"""
from __future__ import annotations

import http.client
import http.server
import os
import signal
import ssl
import sys
import threading

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer"}


def make_handler(upstream: str):
    host, _sep, port = upstream.rpartition(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "bm-nginx-standin"
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            sys.stderr.write("bm-nginx: %s %s\n" % (self.address_string(), format % args))

        def send_body(self, code: int, data: bytes, headers=()) -> None:
            self.send_response(code)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def forward(self):
            if not self.path.startswith("/api/"):
                if self.path in ("/", "/index.html"):
                    self.send_body(200, b"BlueMind (lab stand-in)\n", [("Content-Type", "text/plain")])
                else:
                    self.send_body(404, b"not found\n", [("Content-Type", "text/plain")])
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS and k.lower() != "host"}
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
            except OSError as exc:
                self.send_body(502, f"bad gateway: {exc}\n".encode(), [("Content-Type", "text/plain")])
                return
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS | {"content-length"}]
            self.send_body(response.status, data, kept)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

    return Handler


def main() -> int:
    env = os.environ
    address = (env.get("BM_NGINX_BIND", "0.0.0.0"), int(env.get("BM_NGINX_PORT", "443")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert = env.get("BM_NGINX_CERT", "/etc/ssl/certs/bm_cert.pem")
    context.load_cert_chain(cert, env.get("BM_NGINX_KEY", cert))
    server = http.server.ThreadingHTTPServer(address, make_handler(env.get("BM_NGINX_UPSTREAM", "127.0.0.1:8090")))
    server.daemon_threads = True
    # The handshake happens in the request's thread, not in accept().
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

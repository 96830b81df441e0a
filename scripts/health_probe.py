#!/usr/bin/env python3
"""Readiness probes for FishChat's own services, used by scripts/system.

    health_probe.py grpc HOST:PORT [SERVICE]   gRPC health Check; exit 0 when SERVING
                                               (over mutual TLS when FISHCHAT_TLS_* are set)
    health_probe.py http URL [STATUS]          exit 0 when the URL answers (with STATUS if given)

No grpc_health_probe or grpcurl is installed on our machines and the gRPC Python packages are
not either, so the gRPC check speaks just enough HTTP/2 by hand (standard library only): the
client preface, one HEADERS frame whose header block uses only literal or static-table HPACK
entries (no Huffman, no dynamic table, so no encoder state), and one DATA frame carrying a
grpc.health.v1.HealthCheckRequest. The answer is read from the response DATA frame alone
(a HealthCheckResponse whose field 1 is the status), so the server's HPACK headers never need
decoding. A service that is unknown or failing sends no DATA, only trailers: that counts as not
serving. The server's SETTINGS are acknowledged, as the protocol asks.

Mutual TLS: when FISHCHAT_TLS_CA, FISHCHAT_TLS_CERT and FISHCHAT_TLS_KEY are all set (the same
variables the services read, as scripts/system sets them), the gRPC check speaks TLS first with
Python's ssl module, as a service dialling another would: it checks the server's certificate
against the CA in FISHCHAT_TLS_CA for the name FISHCHAT_TLS_SERVER_NAME (default
fishchat.internal, which every certificate scripts/certs issues carries), presents
FISHCHAT_TLS_CERT and FISHCHAT_TLS_KEY as its client certificate, and offers ALPN h2 only (the
server must pick it); then the same HTTP/2 exchange, with :scheme https. Without them the check
is plain HTTP/2, which a service running with mutual TLS refuses (the probe then fails). Only
some of the three set is an error, as it is for the services. The http check is unaffected: the
HTTP ports (register's API, the gateway's, the access node's metrics) are not under mutual TLS.
"""

import os
import socket
import ssl
import struct
import sys
import urllib.error
import urllib.request

USAGE = """usage: health_probe.py grpc HOST:PORT [SERVICE]
       health_probe.py http URL [STATUS]
(grpc over mutual TLS when FISHCHAT_TLS_CA, FISHCHAT_TLS_CERT and FISHCHAT_TLS_KEY are set;
FISHCHAT_TLS_SERVER_NAME, default fishchat.internal, is the name the server must carry)"""
TIMEOUT_S = 3.0
TLS_VARS = ("FISHCHAT_TLS_CA", "FISHCHAT_TLS_CERT", "FISHCHAT_TLS_KEY")
DEFAULT_SERVER_NAME = "fishchat.internal"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_string(text):
    raw = text.encode()
    if len(raw) >= 127:
        raise ValueError("header value too long for this tiny encoder")
    return bytes([len(raw)]) + raw


def request_headers(authority, tls=False):
    # :method POST (static table 3), :scheme http or https (static 6 or 7)
    block = bytes([0x83, 0x87 if tls else 0x86])
    block += b"\x04" + hpack_string("/grpc.health.v1.Health/Check")  # :path, literal value
    block += b"\x01" + hpack_string(authority)  # :authority, literal value
    block += b"\x0f\x10" + hpack_string("application/grpc")  # content-type (static 31)
    block += b"\x00" + hpack_string("te") + hpack_string("trailers")  # literal name and value
    return block


def health_request(service):
    body = b""
    if service:
        raw = service.encode()
        body = b"\x0a" + varint(len(raw)) + raw  # field 1 (service), length-delimited
    return b"\x00" + struct.pack(">I", len(body)) + body  # gRPC message: uncompressed, length


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_exact(sock, count):
    buf = b""
    while len(buf) < count:
        chunk = sock.recv(count - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk
    return buf


def parse_status(message):
    """The status field of a HealthCheckResponse, from one length-prefixed gRPC message."""
    if len(message) < 5:
        return None
    body = message[5 : 5 + struct.unpack(">I", message[1:5])[0]]
    if body == b"":
        return 0  # every field at its default: UNKNOWN
    if body[0] == 0x08 and len(body) >= 2:
        return body[1] & 0x7F
    return None


def tls_context():
    """The client side of the services' mutual TLS, from FISHCHAT_TLS_*; None when unset."""
    files = [os.environ.get(var, "") for var in TLS_VARS]
    if not any(files):
        return None, None
    if not all(files):
        missing = ", ".join(var for var, value in zip(TLS_VARS, files) if not value)
        raise ValueError(f"mutual TLS needs all of {', '.join(TLS_VARS)}; {missing} not set")
    ca, cert, key = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca)
    context.load_cert_chain(certfile=cert, keyfile=key)
    context.set_alpn_protocols(["h2"])
    return context, os.environ.get("FISHCHAT_TLS_SERVER_NAME") or DEFAULT_SERVER_NAME


def grpc_check(addr, service=""):
    host, _, port = addr.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    context, server_name = tls_context()
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
    try:
        sock.settimeout(TIMEOUT_S)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=server_name)
            if sock.selected_alpn_protocol() != "h2":
                raise ConnectionError(
                    f"TLS: the server did not select ALPN h2 (got {sock.selected_alpn_protocol()})"
                )
        return exchange(sock, addr, service, context is not None)
    finally:
        sock.close()


def exchange(sock, addr, service, tls):
    """One health Check over a connected (and, with TLS, handshaken) socket."""
    sock.sendall(
        PREFACE
        + frame(SETTINGS, 0, 0)
        + frame(HEADERS, END_HEADERS, 1, request_headers(addr, tls))
        + frame(DATA, END_STREAM, 1, health_request(service))
    )
    data = b""
    while True:
        head = read_exact(sock, 9)
        length = struct.unpack(">I", b"\x00" + head[:3])[0]
        kind, flags = head[3], head[4]
        stream = struct.unpack(">I", head[5:9])[0] & 0x7FFFFFFF
        payload = read_exact(sock, length)
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            sock.sendall(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            raise ConnectionError("the server sent GOAWAY")
        elif stream == 1 and kind == RST_STREAM:
            raise ConnectionError("the server reset the request")
        elif stream == 1 and kind == DATA:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            data += payload
        if stream == 1 and kind in (DATA, HEADERS) and flags & END_STREAM:
            return parse_status(data)


def http_check(url, want_status=None):
    # No proxy: the services are on this machine, whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as reply:
            status = reply.status
    except urllib.error.HTTPError as err:
        status = err.code
    return want_status is None or status == want_status, status


def main(argv):
    if len(argv) >= 3 and argv[1] == "grpc":
        try:
            status = grpc_check(argv[2], argv[3] if len(argv) > 3 else "")
        except (OSError, ValueError) as err:
            print(f"{argv[2]}: no gRPC health answer: {err}")
            return 2
        if status is None:
            print(f"{argv[2]}: gRPC health answered without a status (unknown service or error)")
            return 1
        print(f"{argv[2]}: {STATUS_NAMES.get(status, status)}")
        return 0 if status == 1 else 1
    if len(argv) >= 3 and argv[1] == "http":
        try:
            ok, status = http_check(argv[2], int(argv[3]) if len(argv) > 3 else None)
        except (OSError, ValueError) as err:
            print(f"{argv[2]}: no HTTP answer: {err}")
            return 2
        print(f"{argv[2]}: HTTP {status}")
        return 0 if ok else 1
    print(USAGE, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))

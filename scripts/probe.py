#!/usr/bin/env python3
"""Readiness probes for the Kafka-protocol and MongoDB-protocol servers of the dev stack.

Usage:
    probe.py kafka HOST:PORT   # Kafka ApiVersions v0, then Metadata v4 naming a live broker
    probe.py mongo HOST:PORT   # MongoDB OP_MSG {hello: 1, $db: "admin"}, expects ok == 1

Exit status 0 when the server answered the request correctly; 1 with a one-line reason on
stderr otherwise (connection refused, timeout, malformed or unexpected reply); 2 on bad usage.

Why this exists: `scripts/stack` must not declare a server ready just because its TCP port is
open. A listening socket says nothing about whether the broker or the database has finished
opening its storage, so the stack waits until each server answers a *real* protocol request.
For etcd and Redis the Debian client tools (etcdctl, redis-cli) do that. For the other two there
is no quick client: Kafka's own tools take seconds of JVM start per call, and no MongoDB shell is
packaged. Both wire protocols are simple enough to speak by hand, so this script does it with the
Python standard library only (no pip install needed before the stack is up):

- Kafka: ApiVersions (api_key 18) version 0 is the one request every Kafka broker must accept
  from any client before anything else, needs no topic and changes nothing. Its response header
  is always the non-flexible v0 header: int32 size, int32 correlation_id, then the body starting
  with int16 error_code. A broker answers it from its network layer alone, so it proves little
  about the rest: the probe then sends Metadata v4 (api_key 3, the oldest version Kafka 4 still
  accepts and the newest without flexible encoding) for no topic, which the broker answers from
  its metadata image, and requires a broker list with at least one broker and a controller id.
  A broker that accepts connections but resets them, errs or has no metadata yet fails.
- MongoDB: `hello` is the handshake every driver sends first; it needs no authentication and no
  database. It is sent as OP_MSG (opcode 2013, MongoDB >= 3.6) with a single kind-0 body section,
  and the reply's BSON document is decoded to check its top-level `ok` field.
"""

import socket
import struct
import sys

TIMEOUT_SECONDS = 5.0
MAX_REPLY_BYTES = 64 * 1024 * 1024


class ProbeError(Exception):
    """A probe failed; the message is the one-line reason printed to the user."""


# ---------------------------------------------------------------------------------------------
# Networking helpers


def parse_address(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ProbeError(f"bad address {text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def connect(address):
    host, port = parse_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=TIMEOUT_SECONDS)
    except socket.timeout:
        raise ProbeError(f"connect to {address} timed out after {TIMEOUT_SECONDS:g}s") from None
    except OSError as exc:
        raise ProbeError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    sock.settimeout(TIMEOUT_SECONDS)
    return sock


def recv_exact(sock, count, what):
    chunks = []
    remaining = count
    while remaining > 0:
        try:
            chunk = sock.recv(min(remaining, 65536))
        except socket.timeout:
            raise ProbeError(f"timed out after {TIMEOUT_SECONDS:g}s waiting for {what}") from None
        except OSError as exc:
            raise ProbeError(f"error reading {what}: {exc.strerror or exc}") from None
        if not chunk:
            raise ProbeError(f"connection closed by server while reading {what}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def send_all(sock, data, what):
    try:
        sock.sendall(data)
    except socket.timeout:
        raise ProbeError(f"timed out after {TIMEOUT_SECONDS:g}s sending {what}") from None
    except OSError as exc:
        raise ProbeError(f"error sending {what}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# Kafka

KAFKA_API_VERSIONS = 18
KAFKA_CLIENT_ID = b"fishchat-probe"
KAFKA_CORRELATION_ID = 0x46495348  # "FISH"


def probe_kafka(address):
    # Request header v1: api_key int16, api_version int16, correlation_id int32,
    # client_id nullable string (int16 length + bytes). ApiVersions v0 has an empty body.
    payload = struct.pack(
        ">hhih", KAFKA_API_VERSIONS, 0, KAFKA_CORRELATION_ID, len(KAFKA_CLIENT_ID)
    ) + KAFKA_CLIENT_ID
    request = struct.pack(">i", len(payload)) + payload

    with connect(address) as sock:
        send_all(sock, request, "ApiVersions request")
        (size,) = struct.unpack(">i", recv_exact(sock, 4, "ApiVersions response size"))
        if size < 6 or size > MAX_REPLY_BYTES:
            raise ProbeError(f"implausible ApiVersions response size {size}")
        body = recv_exact(sock, size, "ApiVersions response")

    correlation_id, error_code = struct.unpack_from(">ih", body, 0)
    if correlation_id != KAFKA_CORRELATION_ID:
        raise ProbeError(
            f"ApiVersions correlation id mismatch: sent {KAFKA_CORRELATION_ID}, got {correlation_id}"
        )
    if error_code != 0:
        raise ProbeError(f"ApiVersions returned error_code {error_code}")

    # Body v0: error_code int16, api_keys array (int32 count, then api_key/min/max int16 each).
    (count,) = struct.unpack_from(">i", body, 6)
    if not 0 <= count <= (len(body) - 10) // 6:
        raise ProbeError(f"ApiVersions: implausible API count {count}")
    versions = {}
    for i in range(count):
        key, low, high = struct.unpack_from(">hhh", body, 10 + 6 * i)
        versions[key] = (low, high)
    low, high = versions.get(KAFKA_METADATA, (None, None))
    if low is None or not low <= KAFKA_METADATA_VERSION <= high:
        raise ProbeError(f"broker does not offer Metadata v{KAFKA_METADATA_VERSION} (offers {low}-{high})")

    brokers, controller = kafka_metadata(address)
    return f"kafka {address}: ApiVersions ok, {count} APIs; Metadata ok, brokers {brokers}, controller {controller}"


KAFKA_METADATA = 3
KAFKA_METADATA_VERSION = 4


def kafka_metadata(address):
    """Sends Metadata v4 for no topic; returns (broker ids, controller id) or raises."""
    # Body v4: topics array (int32 count 0: none), allow_auto_topic_creation bool.
    payload = struct.pack(
        ">hhih", KAFKA_METADATA, KAFKA_METADATA_VERSION, KAFKA_CORRELATION_ID + 1, len(KAFKA_CLIENT_ID)
    ) + KAFKA_CLIENT_ID + struct.pack(">ib", 0, 0)
    with connect(address) as sock:
        send_all(sock, struct.pack(">i", len(payload)) + payload, "Metadata request")
        (size,) = struct.unpack(">i", recv_exact(sock, 4, "Metadata response size"))
        if size < 8 or size > MAX_REPLY_BYTES:
            raise ProbeError(f"implausible Metadata response size {size}")
        body = recv_exact(sock, size, "Metadata response")

    # correlation_id int32, throttle_time_ms int32, brokers array of (node_id int32,
    # host string, port int32, rack nullable string), cluster_id nullable string,
    # controller_id int32, topics array (empty here).
    correlation_id, _throttle, count = struct.unpack_from(">iii", body, 0)
    if correlation_id != KAFKA_CORRELATION_ID + 1:
        raise ProbeError(f"Metadata correlation id mismatch: got {correlation_id}")
    pos = 12
    brokers = []
    for _ in range(count):
        (node_id,) = struct.unpack_from(">i", body, pos)
        (host_len,) = struct.unpack_from(">h", body, pos + 4)
        pos += 6 + max(host_len, 0) + 4
        (rack_len,) = struct.unpack_from(">h", body, pos)
        pos += 2 + max(rack_len, 0)
        brokers.append(node_id)
    (cluster_len,) = struct.unpack_from(">h", body, pos)
    pos += 2 + max(cluster_len, 0)
    (controller,) = struct.unpack_from(">i", body, pos)
    if not brokers:
        raise ProbeError("Metadata lists no live broker")
    if controller < 0:
        raise ProbeError("Metadata names no controller")
    return brokers, controller


# ---------------------------------------------------------------------------------------------
# MongoDB: minimal BSON codec

OP_MSG = 2013
OP_COMPRESSED = 2012
MONGO_REQUEST_ID = 0x46495348


def bson_cstring(text):
    raw = text.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError("BSON key/cstring cannot contain NUL")
    return raw + b"\x00"


def bson_encode(pairs):
    """Encode an ordered list of (key, value) pairs; supports int32, float, str, bool, None."""
    out = bytearray()
    for key, value in pairs:
        name = bson_cstring(key)
        if isinstance(value, bool):
            out += b"\x08" + name + (b"\x01" if value else b"\x00")
        elif isinstance(value, int):
            out += b"\x10" + name + struct.pack("<i", value)
        elif isinstance(value, float):
            out += b"\x01" + name + struct.pack("<d", value)
        elif isinstance(value, str):
            raw = value.encode("utf-8") + b"\x00"
            out += b"\x02" + name + struct.pack("<i", len(raw)) + raw
        elif value is None:
            out += b"\x0a" + name
        else:
            raise TypeError(f"cannot BSON-encode {type(value).__name__}")
    return struct.pack("<i", len(out) + 5) + bytes(out) + b"\x00"


class BsonError(ProbeError):
    pass


def _read_cstring(data, pos):
    end = data.find(b"\x00", pos)
    if end < 0:
        raise BsonError("BSON: unterminated cstring")
    return data[pos:end].decode("utf-8", "replace"), end + 1


def _read_string(data, pos):
    (length,) = struct.unpack_from("<i", data, pos)
    if length < 1 or pos + 4 + length > len(data) or data[pos + 4 + length - 1] != 0:
        raise BsonError("BSON: bad string length")
    return data[pos + 4 : pos + 4 + length - 1].decode("utf-8", "replace"), pos + 4 + length


def bson_decode(data, pos=0):
    """Decode one BSON document starting at pos. Returns (dict, position after the document).

    Handles every type of the BSON spec; values of exotic types are returned as tagged tuples.
    """
    if pos + 5 > len(data):
        raise BsonError("BSON: truncated document")
    (length,) = struct.unpack_from("<i", data, pos)
    end = pos + length
    if length < 5 or end > len(data) or data[end - 1] != 0:
        raise BsonError("BSON: bad document length")
    doc = {}
    cur = pos + 4
    try:
        while cur < end - 1:
            kind = data[cur]
            key, cur = _read_cstring(data, cur + 1)
            if kind == 0x01:  # double
                (value,) = struct.unpack_from("<d", data, cur)
                cur += 8
            elif kind in (0x02, 0x0D, 0x0E):  # string, JavaScript code, symbol
                value, cur = _read_string(data, cur)
            elif kind == 0x03:  # embedded document
                value, cur = bson_decode(data, cur)
            elif kind == 0x04:  # array
                sub, cur = bson_decode(data, cur)
                value = list(sub.values())
            elif kind == 0x05:  # binary: int32 length, subtype byte, bytes
                (blen,) = struct.unpack_from("<i", data, cur)
                value = ("binary", data[cur + 4], data[cur + 5 : cur + 5 + blen])
                cur += 5 + blen
            elif kind in (0x06, 0x0A, 0x7F, 0xFF):  # undefined, null, maxkey, minkey
                value = None
            elif kind == 0x07:  # ObjectId
                value = ("objectid", data[cur : cur + 12].hex())
                cur += 12
            elif kind == 0x08:  # boolean
                value = data[cur] != 0
                cur += 1
            elif kind == 0x09:  # UTC datetime, int64 ms
                (value,) = struct.unpack_from("<q", data, cur)
                value = ("datetime", value)
                cur += 8
            elif kind == 0x0B:  # regex: two cstrings
                pattern, cur = _read_cstring(data, cur)
                options, cur = _read_cstring(data, cur)
                value = ("regex", pattern, options)
            elif kind == 0x0C:  # DBPointer: string + 12 bytes
                ns, cur = _read_string(data, cur)
                value = ("dbpointer", ns, data[cur : cur + 12].hex())
                cur += 12
            elif kind == 0x0F:  # code with scope: int32 total, string, document
                (total,) = struct.unpack_from("<i", data, cur)
                code, after = _read_string(data, cur + 4)
                scope, _ = bson_decode(data, after)
                value = ("code_w_scope", code, scope)
                cur += total
            elif kind == 0x10:  # int32
                (value,) = struct.unpack_from("<i", data, cur)
                cur += 4
            elif kind == 0x11:  # timestamp: uint32 increment, uint32 seconds
                inc, sec = struct.unpack_from("<II", data, cur)
                value = ("timestamp", sec, inc)
                cur += 8
            elif kind == 0x12:  # int64
                (value,) = struct.unpack_from("<q", data, cur)
                cur += 8
            elif kind == 0x13:  # decimal128 (kept raw)
                value = ("decimal128", data[cur : cur + 16].hex())
                cur += 16
            else:
                raise BsonError(f"BSON: unknown element type 0x{kind:02x} for key {key!r}")
            if cur > end - 1:
                raise BsonError(f"BSON: element {key!r} overruns its document")
            doc[key] = value
    except struct.error:
        raise BsonError("BSON: truncated element") from None
    if cur != end - 1:
        raise BsonError("BSON: document elements do not fill its declared length")
    return doc, end


# ---------------------------------------------------------------------------------------------
# MongoDB: OP_MSG hello


def probe_mongo(address):
    body = bson_encode([("hello", 1), ("$db", "admin")])
    # OP_MSG: uint32 flagBits, then sections; kind 0 = one BSON body document.
    message = struct.pack("<I", 0) + b"\x00" + body
    # Standard header: messageLength, requestID, responseTo, opCode (all int32 little endian).
    request = struct.pack("<iiii", 16 + len(message), MONGO_REQUEST_ID, 0, OP_MSG) + message

    with connect(address) as sock:
        send_all(sock, request, "OP_MSG hello")
        header = recv_exact(sock, 16, "reply header")
        length, _request_id, response_to, opcode = struct.unpack("<iiii", header)
        if length < 16 + 5 or length > MAX_REPLY_BYTES:
            raise ProbeError(f"implausible reply length {length}")
        payload = recv_exact(sock, length - 16, "reply body")

    if response_to != MONGO_REQUEST_ID:
        raise ProbeError(f"reply responseTo {response_to} does not match request id {MONGO_REQUEST_ID}")
    if opcode == OP_COMPRESSED:
        raise ProbeError("server replied with OP_COMPRESSED although no compression was negotiated")
    if opcode != OP_MSG:
        raise ProbeError(f"unexpected reply opcode {opcode} (want OP_MSG {OP_MSG})")

    (flags,) = struct.unpack_from("<I", payload, 0)
    end = len(payload) - (4 if flags & 0x1 else 0)  # checksumPresent: trailing CRC-32C
    pos = 4
    reply = None
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            reply, pos = bson_decode(payload[:end], pos)
        elif kind == 1:  # document sequence: int32 size (includes itself), cstring id, documents
            (size,) = struct.unpack_from("<i", payload, pos)
            if size < 4:
                raise ProbeError(f"bad OP_MSG document sequence size {size}")
            pos += size
        else:
            raise ProbeError(f"unknown OP_MSG section kind {kind}")
    if reply is None:
        raise ProbeError("OP_MSG reply has no body section")

    ok = reply.get("ok")
    if isinstance(ok, bool) or not isinstance(ok, (int, float)) or ok != 1:
        errmsg = reply.get("errmsg", "")
        code = reply.get("codeName", reply.get("code", ""))
        raise ProbeError(f"hello returned ok={ok!r} {code} {errmsg}".rstrip())

    detail = ""
    if "maxWireVersion" in reply:
        detail += f", maxWireVersion {reply['maxWireVersion']}"
    if "setName" in reply:
        detail += f", replica set {reply['setName']!r}"
    return f"mongo {address}: hello ok{detail}"


# ---------------------------------------------------------------------------------------------

PROBES = {"kafka": probe_kafka, "mongo": probe_mongo}


def main(argv):
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if len(argv) != 3 or argv[1] not in PROBES:
        print(f"usage: {argv[0]} kafka|mongo HOST:PORT", file=sys.stderr)
        return 2
    kind, address = argv[1], argv[2]
    try:
        message = PROBES[kind](address)
    except ProbeError as exc:
        print(f"{kind} {address}: {exc}", file=sys.stderr)
        return 1
    except (struct.error, IndexError, UnicodeError) as exc:
        print(f"{kind} {address}: malformed reply ({exc})", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

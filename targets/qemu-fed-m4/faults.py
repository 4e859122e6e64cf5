"""Faults for the federated board run (run.sh): asap frames read and written by hand.

  faults.py watch PORT WORLD BOARD_RANK FINISHED SECONDS
      Listens on 127.0.0.1:PORT, where the stopped board was, and reads what the
      other members keep sending it: every frame must decode (its CRC checks) and name
      the board as receiver. The board printed that it finished FINISHED rounds, so it
      started at most FINISHED + 1 (it may have finished one more before it could say
      so, never started another). Under `--wait all` nobody gets far past it while it
      counts as up: a member the board sends to finishes a round only with the board's
      update of that round, one that sends to the board starts a round only once the
      board acknowledged its last update, and every member waits for its
      in-neighbours' updates (exp graph on 4: 0 -> 1, 2; 1 -> 2, 3; 2 -> 3, 0;
      3 -> 0, 1): members 1 and 2 start at most FINISHED + 2 rounds, member 3 at most
      FINISHED + 3. Returns once every other member's frames say it started more than
      FINISHED + 3 (it declared the board down and went on), or fails after
      SECONDS.
  faults.py garbage PORT COUNT SEED CLUSTER BOARD_RANK WORLD [RATE]
      Sends COUNT datagrams that are not frames the board may take, in fixed shares
      (at most RATE a second, checked every 10):
      random bytes, frames whose CRC is wrong, frames cut short, frames of another
      cluster, frames for another node, frames from a node not in the cluster, and
      frames with an authentication tag (the board has no key). Prints how many of each
      went out, and which of the board's counters each should move.

The header is postcard (asap-core wire.rs): version u8, integrity (variant, Blake3's
sequence number), cluster, from, incarnation, to, round, kind (variant and fields),
payload_len, every integer a LEB128 varint; then the payload; then a CRC-32 (IEEE,
little-endian) over both, or a 16-byte tag.
"""
import random
import socket
import struct
import sys
import time
import zlib

HEARTBEAT, UPDATE, NOTIFY = 5, 1, 2


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def byte(self):
        b = self.data[self.at]
        self.at += 1
        return b

    def varint(self):
        n, shift = 0, 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def f32(self):
        v = struct.unpack_from("<f", self.data, self.at)[0]
        self.at += 4
        return v


def decode(data):
    """The header of a CRC frame as a dict, after checking its CRC; raises on anything else."""
    r = Reader(data)
    h = {"version": r.byte(), "integrity": r.varint()}
    if h["version"] != 1 or h["integrity"] != 0:
        raise ValueError(f"version {h['version']}, integrity {h['integrity']}")
    for field in ("cluster", "from", "incarnation", "to", "round"):
        h[field] = r.varint()
    kind = h["kind"] = r.varint()
    if kind == 0:
        r.varint(), r.varint(), r.byte()
    elif kind == 1:
        r.varint(), r.varint(), r.f32(), r.varint()
    elif kind == 2:
        r.varint()
    elif kind == 4:
        r.varint(), r.varint()
    elif kind > 7:
        raise ValueError(f"kind {kind}")
    payload_len = r.varint()
    end = r.at + payload_len
    (crc,) = struct.unpack_from("<I", data, end)
    if crc != zlib.crc32(data[:end]):
        raise ValueError("bad CRC")
    return h


def header(cluster, sender, to, rnd, kind_bytes, payload_len, integrity=b"\x00", incarnation=1):
    return (bytes([1]) + integrity + varint(cluster) + varint(sender) + varint(incarnation) + varint(to)
            + varint(rnd) + kind_bytes + varint(payload_len))


def crc_frame(cluster, sender, to, rnd, rng, incarnation=1):
    """A well-formed CRC frame: a heartbeat, or an update chunk of a few values."""
    if rng.random() < 0.5:
        body = header(cluster, sender, to, rnd, varint(HEARTBEAT), 0, incarnation=incarnation)
    else:
        values = struct.pack("<4f", *(rng.uniform(-1e6, 1e6) for _ in range(4)))
        kind = varint(UPDATE) + varint(0) + varint(12) + struct.pack("<f", 0.25) + varint(0)
        body = header(cluster, sender, to, rnd, kind, len(values), incarnation=incarnation) + values
    return body + struct.pack("<I", zlib.crc32(body))


def watch(port, world, board, finished, seconds):
    past = finished + 3
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.settimeout(0.2)
    started = {}
    frames, kinds = 0, {}
    deadline = time.monotonic() + seconds
    others = [r for r in range(world) if r != board]
    while time.monotonic() < deadline:
        try:
            data, _ = s.recvfrom(65536)
        except socket.timeout:
            continue
        h = decode(data)
        if h["to"] != board or h["from"] not in others:
            raise ValueError(f"frame for {h['to']} from {h['from']}")
        frames += 1
        kinds[h["kind"]] = kinds.get(h["kind"], 0) + 1
        # An update or NOTIFY is of a round the sender started; a heartbeat counts them.
        n = h["round"] + (1 if h["kind"] in (UPDATE, NOTIFY) else 0)
        started[h["from"]] = max(started.get(h["from"], 0), n)
        if all(started.get(r, 0) > past for r in others):
            names = {0: "hello", 1: "update", 2: "notify", 3: "ack", 4: "missing", 5: "heartbeat", 6: "barrier",
                     7: "leave"}
            got = ", ".join(f"{n} {names[k]}" for k, n in sorted(kinds.items()))
            print(f"while the board was down: {frames} frames sent to it, all valid ({got}); members "
                  + ", ".join(f"{r} started {started[r]} rounds" for r in others)
                  + f" (the board had finished {finished}, so had started at most {finished + 1})")
            return 0
    print(f"while the board was down: members started {started} rounds in {seconds} s, not all past {past}")
    return 1


def garbage(port, count, seed, cluster, board, world, rate=0):
    rng = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = ("127.0.0.1", port)
    kinds = ["random bytes", "bad CRC", "cut short", "other cluster", "for another node", "from no member",
             "tagged (no key here)"]
    sent = dict.fromkeys(kinds, 0)
    stranger = world + 5
    began = time.monotonic()
    for k in range(count):
        kind = kinds[k % len(kinds)]
        peer = rng.randrange(world - 1)
        peer += peer >= board
        rnd = rng.randrange(100)
        if kind == "random bytes":
            data = rng.randbytes(rng.randrange(1, 1400))
            if data[0] == 1:
                data = b"\x02" + data[1:]
        elif kind == "bad CRC":
            # One bit flipped past the version and integrity bytes: a CRC-32 catches
            # every one-bit error (the integrity byte would make it a tagged frame).
            data = bytearray(crc_frame(cluster, peer, board, rnd, rng))
            data[rng.randrange(2, len(data))] ^= 1 << rng.randrange(8)
            data = bytes(data)
        elif kind == "cut short":
            frame = crc_frame(cluster, peer, board, rnd, rng)
            data = frame[:rng.randrange(1, len(frame))]
        elif kind == "other cluster":
            data = crc_frame(cluster ^ 0x5A5A, peer, board, rnd, rng)
        elif kind == "for another node":
            data = crc_frame(cluster, peer, stranger, rnd, rng)
        elif kind == "from no member":
            data = crc_frame(cluster, stranger, board, rnd, rng)
        else:
            seq = varint(rng.randrange(1 << 32))
            body = header(cluster, peer, board, rnd, varint(HEARTBEAT), 0, integrity=b"\x01" + seq)
            data = body + rng.randbytes(16)
        s.sendto(data, dest)
        sent[kind] += 1
        if rate and k % 10 == 9:
            ahead = began + (k + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    decode_errors = sent["random bytes"] + sent["bad CRC"] + sent["cut short"]
    refused = sent["other cluster"] + sent["for another node"] + sent["from no member"]
    print(f"garbage: {count} datagrams to 127.0.0.1:{port} in {time.monotonic() - began:.1f} s: "
          + ", ".join(f"{n} {k}" for k, n in sent.items()))
    print(f"garbage sent decode_errors {decode_errors} frames_refused {refused} auth_failures "
          f"{sent['tagged (no key here)']}")
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], [int(a, 0) for a in sys.argv[2:]]
    sys.exit(watch(*args) if cmd == "watch" else garbage(*args))

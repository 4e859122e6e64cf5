"""Faults for the federated board run (run.sh): asap frames read by hand.

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

The header is postcard (asap-core wire.rs): version u8, integrity (variant, Blake3's
sequence number), cluster, from, incarnation, to, round, kind (variant and fields),
payload_len, every integer a LEB128 varint; then the payload; then a CRC-32 (IEEE,
little-endian) over both, or a 16-byte tag.
"""
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


if __name__ == "__main__":
    cmd, args = sys.argv[1], [int(a, 0) for a in sys.argv[2:]]
    sys.exit(watch(*args) if cmd == "watch" else 2)

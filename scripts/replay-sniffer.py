"""Sniffs UDP datagrams between the given loopback ports and replays each from a
foreign socket, once as it was and once with one byte flipped. Stops on SIGTERM."""
import socket, struct, sys, signal
ports = set(int(p) for p in sys.argv[1].split(','))
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
sniff.bind(("lo", 0))
foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
foreign.bind(("127.0.0.1", 0))
sent = 0
def stop(*_):
    print(f"replayed {sent} datagrams (x2) from port {foreign.getsockname()[1]}", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    frame, addr = sniff.recvfrom(65535)
    if addr[2] != socket.PACKET_HOST:
        continue
    ip = frame[14:]  # lo has a 14-byte (zero) Ethernet header
    if len(ip) < 28 or ip[9] != 17:
        continue
    ihl = (ip[0] & 15) * 4
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    if sport not in ports or dport not in ports:
        continue
    payload = bytearray(ip[ihl + 8:])
    try:
        foreign.sendto(payload, ("127.0.0.1", dport))
        payload[len(payload) // 2] ^= 0x10
        foreign.sendto(payload, ("127.0.0.1", dport))
        sent += 1
    except OSError:
        pass

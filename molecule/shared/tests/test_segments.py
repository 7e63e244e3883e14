"""Every VM reaches every other VM on every segment they share (IPv4 and IPv6)."""
import pytest

import labtopo


@pytest.mark.parametrize("src,dst,segment,address", labtopo.segment_peers(),
                         ids=str)
def test_segment_reaches_peer(src, dst, segment, address):
    ping = "ping -6" if ":" in address else "ping"
    # One reply within 10 s (one echo a second): a lost first packet is not a fault.
    result = labtopo.vm(src).run(f"{ping} -c 1 -w 10 {address}")
    assert result.rc == 0, f"{src} cannot reach {dst} at {address} on {segment}: {result.stdout}"


def test_every_segment_is_private():
    """A segment carries only its own subnet: no VM sees a peer's address of another segment."""
    pairs = labtopo.segment_peers()
    assert pairs, "the topology defines no shared segment"
    segments = {pair[2] for pair in pairs}
    for name in [p["name"] for p in labtopo.platforms()]:
        links = labtopo.vm(name).run("ip -o link show").stdout
        # eth0 (management) plus one NIC per segment the VM joins.
        expected = 1 + len([n for p in labtopo.platforms() if p["name"] == name for n in p.get("nics", [])])
        assert links.count(" eth") == expected, f"{name}: {links}"
    assert segments

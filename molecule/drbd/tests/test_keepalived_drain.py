"""The health check failing on the active node (drained by an operator, as a
planned switchover does): FAULT, the floating IP and BlueMind on the peer, and
the IP does not come back once the check passes again, under a client outside the
pair. drbd scenario only: the bm-core crash (test_bluemind) fails the check in both
scenarios."""
import labtopo
import pairstate
from test_keepalived import ERROR_WINDOW_BOUND, assert_stays, holders, other, vrrp_state, wait_bluemind_follows, wait_holder


def test_failing_health_check_moves_the_ip_and_it_does_not_come_back():
    holder = holders()[0]
    peer = other(holder)
    with pairstate.client_during(holder, "health-failing", ERROR_WINDOW_BOUND["health check failing"]):
        try:
            labtopo.vm(holder).check_output("mkdir -p /run/bluemind-ha && touch /run/bluemind-ha/drain")
            wait_holder(peer, 20)
            labtopo.wait_for(lambda: vrrp_state(holder) == "FAULT", 20, f"{holder} to be in FAULT")
            assert holders() == [peer]
        finally:
            labtopo.vm(holder).check_output("rm -f /run/bluemind-ha/drain")
        labtopo.wait_for(lambda: vrrp_state(holder) == "BACKUP", 60, f"{holder} to leave FAULT for BACKUP")
        wait_bluemind_follows(peer)
    assert_stays(peer, 5)
    assert holders() == [peer]

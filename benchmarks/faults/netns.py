"""A network namespace joined to this host by a veth pair, for cutting one process's network.

The edge (and the simulator it polls, so polling goes on during the cut) run inside the
namespace; the Kafka broker listens on the host end of the veth. Taking the host end down is a
cable pulled out: packets are dropped silently, nothing is refused, so clients see timeouts,
not quick connection errors.

Root only (``ip netns``, ``ip link``). The addresses are a private /30 chosen among ones no
interface of this machine uses; ``close()`` deletes the namespace and the pair, and is also
registered with ``atexit`` so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import subprocess

# Candidate /30s (RFC 1918, rarely used third octets); the first that no interface or route
# of this machine overlaps is taken.
_CANDIDATES = [f"10.213.{third}.0/30" for third in (47, 148, 201, 29, 77)]


class NetnsUnavailable(RuntimeError):
    pass


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(("netns", "exec", netns, "ip") if netns else ()), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    if check and result.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result.stdout


def _in_use() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in _ip("-4", "-o", "addr").splitlines() + _ip("-4", "route").splitlines():
        for word in line.split():
            if "/" in word and word[0].isdigit():
                try:
                    nets.append(ipaddress.ip_network(word, strict=False))
                except ValueError:
                    continue
    return nets


class Netns:
    """``ip netns add`` + a veth pair with a /30 on it; ``host_address`` is this side."""

    def __init__(self, tag: str | None = None) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("the ip command (iproute2) is not installed")
        tag = tag or str(os.getpid() % 100000)
        self.name = f"rigfault-{tag}"
        # Interface names are at most 15 characters.
        self.host_if = f"rfh{tag}"[:15]
        self.ns_if = f"rfn{tag}"[:15]
        used = _in_use()
        for candidate in _CANDIDATES:
            net = ipaddress.ip_network(candidate)
            if not any(net.overlaps(u) for u in used):
                break
        else:
            raise NetnsUnavailable("no free private /30 for the veth pair")
        hosts = list(net.hosts())
        self.host_address, self.ns_address = str(hosts[0]), str(hosts[1])
        self._created = False
        try:
            _ip("netns", "add", self.name)
            self._created = True
            atexit.register(self.close)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("addr", "add", f"{self.ns_address}/30", "dev", self.ns_if, netns=self.name)
            _ip("link", "set", self.ns_if, "up", netns=self.name)
            # The simulator and the edge's metrics endpoint listen on the namespace's own
            # loopback.
            _ip("link", "set", "lo", "up", netns=self.name)
        except BaseException:
            self.close()
            raise

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def link(self, up: bool) -> None:
        """Plug (up) or pull (down) the cable, on the host end."""
        _ip("link", "set", self.host_if, "up" if up else "down")

    def close(self) -> None:
        if not self._created:
            return
        self._created = False
        # Deleting one end deletes the pair; deleting the namespace deletes its end too.
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)

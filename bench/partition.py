"""A worker host cut off mid-transaction: how long its work is held, and what the healthy
host does meanwhile.

Builds the multi-host deployment of the tests (tests/hosts/harness.py: network
namespaces for a database host and two worker hosts behind a router, a private
PostgreSQL and Redis, real `matchops worker`s, the short bounds of its BASE_SETTINGS), cuts worker
host `a` off while it is inside a `peer.sweep` and a `peer.request`, and prints the time
from the cut to the held tasks' outcomes and the healthy host's throughput without and
during the partition, side by side.

`python -m bench.partition [--wait SECONDS]` as root (network namespaces); elsewhere it
says why it cannot run and exits 0. Its own servers: DATABASE_URL is not used.
"""

from __future__ import annotations

import argparse

from tests.hosts.harness import deployment, unavailable
from tests.hosts.scenarios import partition


def main() -> None:
    """Run the partition scenario once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wait", type=float, default=120, help="seconds after the cut to wait for the held work"
    )
    args = parser.parse_args()
    if reason := unavailable():
        print(f"bench.partition not run: {reason}")
        return
    with deployment() as hosts:
        hosts.start_worker("a")
        hosts.start_worker("b")
        with hosts.events() as events:
            print(partition(hosts, events, wait=args.wait).report())


if __name__ == "__main__":
    main()

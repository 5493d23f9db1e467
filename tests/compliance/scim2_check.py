"""Runs scim2-tester (PyPI) against a Portcullis SCIM feed.

    scim2_check.py BASE_URL TOKEN

Prints one line per check: status, resource type, title, reason. Exits 1
when any check ends in ERROR or CRITICAL (a MUST of RFC 7643/7644 broken),
0 otherwise. Checks skipped by scim2-tester are listed with the reason it
gives.
"""

import sys
from collections import Counter

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


def main() -> int:
    base, token = sys.argv[1], sys.argv[2]
    http = httpx2.Client(
        base_url=base.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    client = SyncSCIMClient(http)
    results = check_server(client)
    counts = Counter(r.status.name for r in results)
    failed = 0
    for r in results:
        name = r.status.name
        print(f"{name:10} {r.resource_type or '-':6} {r.title}: {r.reason or ''}".rstrip())
        if r.status in (Status.ERROR, Status.CRITICAL):
            failed += 1
    print("summary:", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

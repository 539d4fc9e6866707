"""Send events to Herald with the official Python `pusher` SDK.

Usage: trigger.py CHANNEL EVENT DATA

Triggers EVENT on CHANNEL with DATA (a string, sent as is), then sends a batch of two
events on the same channel: EVENT-batch-1 and EVENT-batch-2, whose data is DATA with
" #1" and " #2" appended. Reads INTEROP_HOST, INTEROP_PORT, INTEROP_APP_ID, INTEROP_KEY
and INTEROP_SECRET like the Node scripts. Exits 0 when the server accepted everything.

The SDK only accepts numeric app ids (it checks them against [0-9]+), so the app under
test must have one.
"""

import os
import sys

import pusher

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def main(argv):
    if len(argv) != 4:
        sys.exit(f"usage: {argv[0]} CHANNEL EVENT DATA")
    channel, event, data = argv[1:]

    host = os.environ.get("INTEROP_HOST", "127.0.0.1")
    if host not in LOOPBACK:
        sys.exit(f"FAIL: INTEROP_HOST must be a loopback address, not {host}")
    try:
        client = pusher.Pusher(
            app_id=os.environ.get("INTEROP_APP_ID", "demo-app"),
            key=os.environ.get("INTEROP_KEY", "demo-key"),
            secret=os.environ.get("INTEROP_SECRET", "demo-secret"),
            host=host,
            port=int(os.environ.get("INTEROP_PORT", "6001")),
            ssl=False,
            timeout=5,
        )
    except ValueError as error:
        sys.exit(f"FAIL: the pusher SDK refused its settings: {error}")

    try:
        answer = client.trigger(channel, event, data)
        print(f"trigger: {answer!r}")
        answer = client.trigger_batch(
            [
                {"channel": channel, "name": f"{event}-batch-1", "data": f"{data} #1"},
                {"channel": channel, "name": f"{event}-batch-2", "data": f"{data} #2"},
            ]
        )
        print(f"trigger_batch: {answer!r}")
    except Exception as error:  # the SDK's errors, and the HTTP library's
        sys.exit(f"FAIL: {type(error).__name__}: {error}")
    print("ok: python pusher SDK")


if __name__ == "__main__":
    main(sys.argv)

"""Crash-test writer (a script, not a test module): tests/test_crash.py runs it and SIGKILLs it.

    python tests/crash_writer.py STORE_DIR

Opens (or creates) the store, re-attaches the store's one non-steward agent or creates it,
then writes understandings forever. Protocol on stdout, one flushed line each:

    opening            before LocalNode.open (which may create the network)
    opened             the store is open; agent creation/re-attachment comes next
    agent <agent_id>   the agent exists
    <action hash>      one per write, printed only after the write returned (committed)

The clock is fake: it steps a little per write, and when the budget runs out it jumps to the
window's reset time the refusal names, so windows roll without waiting.
"""

from __future__ import annotations

import sys

import trio

from node.sdk import InsufficientRU, LocalNode

START = 1_700_000_000.0
STEP_S = 7.0


def say(*parts) -> None:
    print(*parts, flush=True)


async def main(path: str) -> None:
    now = [START]
    say("opening")
    async with LocalNode.open(path=path, clock=lambda: now[0]) as node:
        say("opened")
        steward = node.steward
        mine = [a for a in node.agents() if steward is None or a != steward.agent_id]
        agent = await node.agent(mine[0]) if mine else await node.new_agent()
        say("agent", agent.agent_id)
        i = 0
        while True:
            now[0] += STEP_S
            try:
                h = await agent.transmit_understanding(f"s{i}", "p", "o")
            except InsufficientRU as e:
                now[0] = max(now[0], float(e.resets_at))
                continue
            say(h)
            i += 1


if __name__ == "__main__":
    trio.run(main, sys.argv[1])

"""MCP client for the end-to-end tests (official SDK): connect, list tools,
call `echo`, and print one JSON line with what it saw.

    mcp_client.py URL [--mode legacy|auto] [--legacy-sse] [--token TOKEN]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


async def run(a) -> dict:
    headers = {"Authorization": f"Bearer {a.token}"} if a.token else None
    if a.legacy_sse:
        transport = sse_client(a.url, headers=headers)
    else:
        transport = streamable_http_client(
            a.url, http_client=httpx2.AsyncClient(headers=headers, timeout=10) if headers else None)
    async with Client(transport, mode=a.mode) as client:
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"text": "hello"})
        return {
            "protocol_version": client.protocol_version,
            "tools": [t.name for t in tools.tools],
            "result": [getattr(c, "text", None) for c in result.content],
        }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--mode", default="auto")
    p.add_argument("--legacy-sse", action="store_true")
    p.add_argument("--token")
    a = p.parse_args()
    print(json.dumps(asyncio.run(asyncio.wait_for(run(a), 30))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

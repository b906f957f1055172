"""MCP server for the end-to-end tests, built with the official SDK: one tool
(`echo`), served over the transport named on the command line.

    mcp_server.py --transport json|sse-replies|legacy-sse --host IP --port N
                  [--check-origin] [--token TOKEN]

json / sse-replies: Streamable HTTP at /mcp (session-based replies as
application/json or text/event-stream; the SDK answers the stateless
2026-07-28 form on the same endpoint). legacy-sse: the HTTP+SSE transport at
/sse and /messages/. --check-origin turns on the SDK's Host/Origin checks;
--token makes every request need `Authorization: Bearer TOKEN` (401 otherwise).
Prints "ready" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings


def require_token(app, token: str):
    """ASGI wrapper: 401 with a Bearer challenge unless the token is presented."""
    want = f"Bearer {token}".encode()

    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != want:
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate",
                 b'Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource"'),
            ]})
            await send({"type": "http.response.body", "body": b'{"error":"invalid_token"}'})
            return
        await app(scope, receive, send)

    return wrapped


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--transport", choices=["json", "sse-replies", "legacy-sse"], required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--check-origin", action="store_true")
    p.add_argument("--token")
    a = p.parse_args()

    server = MCPServer("gatewatch-e2e")

    @server.tool()
    def echo(text: str) -> str:
        """Returns its argument."""
        return text

    host = f"[{a.host}]" if ":" in a.host else a.host
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=a.check_origin,
        allowed_hosts=[f"{host}:*"], allowed_origins=[f"http://{host}:*"])
    if a.transport == "legacy-sse":
        app = server.sse_app(transport_security=security, host=a.host)
    else:
        app = server.streamable_http_app(json_response=a.transport == "json",
                                         transport_security=security, host=a.host)
    if a.token:
        app = require_token(app, a.token)
    config = uvicorn.Config(app, host=a.host, port=a.port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)

    async def serve():
        task = asyncio.create_task(srv.serve())
        while not srv.started:
            if task.done():
                return task.result()
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

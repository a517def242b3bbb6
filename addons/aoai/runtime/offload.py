"""Work that grows with what a client sends runs off the event loop.

Parsing, checking, tokenising and judging a request take time in proportion to its body: a
few microseconds for the usual request, seconds for a 10 MiB prompt. While one hook runs,
the event loop serves no one else, so a request whose body is large has that work done in a
worker thread (tiktoken, RE2, PyAV and Pillow let go of the GIL while they work); the usual
small request is handled where it is, with no thread hop.
"""

from __future__ import annotations

from mitmproxy import http

# A body this large takes a millisecond or two to parse and count on the loop.
OFF_LOOP_BYTES = 64 * 1024
# A compressed body may decode to a thousand times its size: judged by a smaller size.
OFF_LOOP_ENCODED_BYTES = 1024


def heavy(request: http.Request) -> bool:
    """Whether the work on this request's body belongs in a worker thread."""
    size = len(request.raw_content or b"")
    if size > OFF_LOOP_BYTES:
        return True
    return size > OFF_LOOP_ENCODED_BYTES and "content-encoding" in request.headers

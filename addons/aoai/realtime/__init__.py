"""The Realtime API's protocol, without sockets: a session takes client events one at a time
and sends server events through a callback, so a WebSocket server (or a test) drives it."""

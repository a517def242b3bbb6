"""What the stages share: configuration (`config`), the route table (`routes`) and the
per-request state (`state`), the latency model (`latency`), rate-limit windows (`limits`),
recordings (`recording`), paced streams (`streams`), failing closed (`failures`), start-up
refusal (`startup`), workers reaching each other (`peers`), and every use of mitmproxy
internals (`internals`)."""

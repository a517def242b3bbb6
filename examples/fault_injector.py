"""Fault injector: an example of writing your own faults as an extension. The simulator has
declared fault profiles built in (a deployment's `faults` in the deployments file: 500s, 503s,
timeouts, hangs, stream cuts, slow first bytes, trickles, quota cuts, context-length errors,
seeded and counted; see the README's "Faults" section); reach for an extension like this one
when you need a failure of your own. This one is driven by options of its own (set with --set
or in mitmweb's Options, or with the environment variables below):

- fault_error_share: share (0 to 1) of requests answered 503 with a retry-after;
- fault_retry_after: the seconds that retry-after says;
- fault_cut_after_tokens: streamed answers break after this many tokens (0: never);
- fault_slow_first_byte_ms: every answer starts this much later.

    EXTENSION_PATH=examples/fault_injector.py make run ARGS="--set fault_error_share=0.2"
"""

import asyncio
import logging
import os
import random

from mitmproxy import ctx, exceptions, http

from aoai.extension import azure_error, context_of

logger = logging.getLogger(__name__)


class FaultInjector:
    def load(self, loader):
        loader.add_option(
            "fault_error_share",
            str,
            os.environ.get("FAULT_ERROR_SHARE", "0"),
            "Share (0 to 1) of requests answered 503.",
        )
        loader.add_option(
            "fault_retry_after",
            int,
            int(os.environ.get("FAULT_RETRY_AFTER", "1")),
            "Seconds in the retry-after of injected 503s.",
        )
        loader.add_option(
            "fault_cut_after_tokens",
            int,
            int(os.environ.get("FAULT_CUT_AFTER_TOKENS", "0")),
            "Break streamed answers after this many tokens; 0: never.",
        )
        loader.add_option(
            "fault_slow_first_byte_ms",
            int,
            int(os.environ.get("FAULT_SLOW_FIRST_BYTE_MS", "0")),
            "Delay every answer by this many milliseconds.",
        )
        self.share = 0.0

    def configure(self, updated):
        if "fault_error_share" in updated:
            try:
                share = float(ctx.options.fault_error_share)
            except ValueError:
                raise exceptions.OptionsError("fault_error_share: expected a number from 0 to 1") from None
            if not 0 <= share <= 1:
                raise exceptions.OptionsError("fault_error_share: expected a number from 0 to 1")
            self.share = share

    async def request(self, flow: http.HTTPFlow):
        if flow.response or flow.request.path.startswith("/++/"):
            return
        if ctx.options.fault_slow_first_byte_ms > 0:
            await asyncio.sleep(ctx.options.fault_slow_first_byte_ms / 1000)
        if self.share and random.random() < self.share:
            logger.info("injected 503 for %s", flow.request.path)
            flow.response = azure_error(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
                flow.request,
                headers={"retry-after": str(ctx.options.fault_retry_after)},
            )
            return
        context = context_of(flow)
        if context is not None and ctx.options.fault_cut_after_tokens > 0:
            context.values["stream_cut_after"] = ctx.options.fault_cut_after_tokens


addons = [FaultInjector()]

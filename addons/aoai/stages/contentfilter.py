"""Content filter: prompts judged as Azure's filter judges them, after the quota is charged
(Azure counts a filtered request against it) and before anything answers.

A blocked prompt gets Azure's 400 (`content_filter`; image generation's own
`content_policy_violation`) in generate and replay mode; in record mode Azure filters for
itself. A prompt that passes carries its scores (the answer's `prompt_filter_results`) and,
in generate mode, how its answers are to be judged (the generators cut a blocked answer).
The rules are the deployment's (`contentFilter` in the deployments file); a seeded share of
requests is filtered at random; `x-ms-simulator-content-filter` forces a verdict.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from mitmproxy import http

from .. import wire
from ..openai import catalogue
from ..openai import content_filter as filters
from ..runtime import offload
from ..runtime.config import SimulatorConfig
from ..runtime.state import RequestContext, context_of

logger = logging.getLogger(__name__)

_NOT_FORCED = filters.Forced()


class ContentFilter:
    def __init__(self, config: SimulatorConfig):
        self.config = config
        self.dice = filters.Dice(config.seed)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        context = context_of(flow)
        if (
            flow.response
            or context is None
            or context.route is None
            or context.route.prompt_texts is None
            or context.deployment is None
            or self.config.mode == "record"
        ):
            return None
        policy = context.deployment.content_filter or filters.DEFAULT
        header = flow.request.headers.get(filters.HEADER)
        if policy.idle and header is None:
            return None  # nothing to judge: the answer keeps the all-safe results
        try:
            forced = filters.parse_forced(header) if header else _NOT_FORCED
        except filters.FilterSpecError as e:
            flow.response = wire.openai_error(
                400, str(e), param=filters.HEADER, code="invalid_header", request=flow.request
            )
            return None
        if self.dice.seed != self.config.seed:
            self.dice = filters.Dice(self.config.seed)  # a new seed starts the draws afresh
        if policy.prompt and offload.heavy(flow.request):
            return self._judge_off_loop(flow, context, policy, forced)  # a long prompt: scanned in a thread
        self._decide(flow, context, policy, forced, self.judge_texts(context, policy))
        return None

    async def _judge_off_loop(
        self, flow: http.HTTPFlow, context: RequestContext, policy: filters.Policy, forced: filters.Forced
    ) -> None:
        verdicts = await asyncio.to_thread(self.judge_texts, context, policy)
        self._decide(flow, context, policy, forced, verdicts)

    def _decide(
        self,
        flow: http.HTTPFlow,
        context: RequestContext,
        policy: filters.Policy,
        forced: filters.Forced,
        verdicts: list[filters.Verdict],
    ) -> None:
        self.add_draws(context, policy, forced, verdicts)
        blocked = next((v for v in verdicts if v.blocked), None)
        if blocked is not None:
            context.filtered = [(filters.PROMPT, category) for category in blocked.filtered]
            flow.response = self.refusal(context, blocked)
            logger.info("content filter: %s prompt blocked (%s)", context.deployment.label, ", ".join(blocked.filtered))
            return
        if any(v.scored for v in verdicts):
            context.prompt_filter = [v.results() for v in verdicts]
        if self.config.mode == "generate":
            context.answer_filter = self.answer_filter(context, policy, forced)

    @staticmethod
    def judge_texts(context: RequestContext, policy: filters.Policy) -> list[filters.Verdict]:
        """Each prompt's verdict by the deployment's rules alone."""
        texts = context.route.prompt_texts(context.body) or [""]
        return [filters.judge(policy.prompt, text, filters.PROMPT, policy.block_at) for text in texts]

    def add_draws(
        self, context: RequestContext, policy: filters.Policy, forced: filters.Forced, verdicts: list[filters.Verdict]
    ) -> None:
        """What the header forces and the random share draws, on the first prompt's verdict."""
        for category, severity in forced.prompt:
            verdicts[0].score(category, severity)
        drawn = self.dice.hit(context.deployment.name, filters.PROMPT, policy.prompt_share)
        if drawn is not None:
            verdicts[0].score(drawn)

    def answer_filter(
        self, context: RequestContext, policy: filters.Policy, forced: filters.Forced
    ) -> filters.AnswerFilter | None:
        """How the answers are judged: the rules, and a verdict decided now for all of them."""
        preset = list(forced.completion)
        drawn = self.dice.hit(context.deployment.name, filters.COMPLETION, policy.completion_share)
        if drawn is not None:
            preset.append((drawn, "high"))
        if not policy.completion and not preset:
            return None
        return filters.AnswerFilter(policy.completion, policy.block_at, tuple(preset))

    def refusal(self, context: RequestContext, verdict: filters.Verdict) -> http.Response:
        image = context.deployment.model.kind == catalogue.IMAGE
        body = filters.image_error(verdict) if image else filters.prompt_error(verdict)
        return wire.json_response(400, body, context.request, self.config.region)

"""The content filter's rule engine, the answers it cuts, and its stage on mitmproxy test flows."""

import random

import pytest
from unit_support import admit, chat_path, json_of, make_config, make_flow

from aoai.openai import catalogue, chat, completions, responses
from aoai.openai import content_filter as cf
from aoai.openai.catalogue import Normal
from aoai.runtime import config as cfg
from aoai.runtime.config import ConfigError
from aoai.runtime.state import context_of
from aoai.stages.contentfilter import ContentFilter
from aoai.stages.management import patch_plan

GPT4O = catalogue.MODELS["gpt-4o"]
INSTRUCT = catalogue.MODELS["gpt-35-turbo-instruct"]


def policy(**spec):
    return cf.parse_policy(spec, "f: d.contentFilter")


def spec_error(spec):
    with pytest.raises(cf.FilterSpecError) as caught:
        cf.parse_policy(spec, "f: d.contentFilter")
    return str(caught.value)


# --- rules and thresholds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block_at, severity, filtered",
    [
        ("medium", "low", False),
        ("medium", "medium", True),
        ("medium", "high", True),
        ("low", "low", True),
        ("high", "medium", False),
        ("high", "high", True),
        ("off", "high", False),
    ],
)
def test_a_severity_blocks_from_the_threshold(block_at, severity, filtered):
    rules = policy(blockAt=block_at, prompt={"hate": [{"term": "grr", "severity": severity}]})
    verdict = cf.judge(rules.prompt, "well grr then", cf.PROMPT, rules.block_at)
    assert verdict.results()["hate"] == {"filtered": filtered, "severity": severity}
    assert verdict.blocked is filtered


def test_the_highest_matching_severity_wins():
    rules = policy(
        prompt={
            "violence": [
                {"term": "punch", "severity": "low"},
                {"term": "stab", "severity": "high"},
                {"term": "shove", "severity": "medium"},
            ]
        }
    )
    verdict = cf.judge(rules.prompt, "punch, shove and stab", cf.PROMPT)
    assert verdict.severities == {"violence": "high"} and verdict.filtered == ["violence"]


def test_terms_match_whole_words_in_any_case_and_spacing():
    rules = policy(prompt={"hate": ["bad words"]}).prompt
    assert cf.judge(rules, "Some BAD\n  Words here", cf.PROMPT).blocked
    assert not cf.judge(rules, "badwords", cf.PROMPT).blocked
    assert not cf.judge(rules, "bad wordsmith", cf.PROMPT).blocked


def test_a_match_is_placed_in_the_text_as_written():
    rules = policy(prompt={"violence": ["kill"], "hate": [{"regex": "[A-Z]{3}!"}]}).prompt
    # "İ" lower-cases to two characters: offsets then come from the text itself.
    assert cf.judge(rules, "İİ skill, kill_it, KILL now", cf.PROMPT).cut_at == 19
    assert cf.judge(rules, "a ABC!", cf.PROMPT).cut_at == 2
    assert cf.judge(rules, "a abc!", cf.PROMPT).cut_at == 2


def test_regular_expressions_match_anywhere_ignoring_case():
    rules = policy(prompt={"sexual": [{"regex": r"x{3,}", "severity": "medium"}]}).prompt
    assert cf.judge(rules, "aXXXXb", cf.PROMPT).results()["sexual"] == {"filtered": True, "severity": "medium"}
    assert not cf.judge(rules, "xx", cf.PROMPT).scored


def test_jailbreak_is_detected_and_blocks():
    rules = policy(prompt={"jailbreak": ["ignore previous instructions"]})
    verdict = cf.judge(rules.prompt, "Ignore previous instructions now", cf.PROMPT, rules.block_at)
    assert verdict.results()["jailbreak"] == {"filtered": True, "detected": True}
    assert list(verdict.results()) == ["hate", "jailbreak", "self_harm", "sexual", "violence"]


def test_answers_report_protected_material():
    verdict = cf.judge(
        policy(completion={"protected_material_code": ["def main"]}).completion,
        "x = 1\ndef main(): pass",
        cf.COMPLETION,
    )
    assert verdict.results()["protected_material_code"] == {"filtered": True, "detected": True}
    assert verdict.results()["protected_material_text"] == {"filtered": False, "detected": False}
    assert verdict.cut_at == 6


def test_a_policy_shows_as_it_was_written():
    spec = {
        "blockAt": "high",
        "randomShare": {"prompt": 0.25, "completion": 0.0},
        "prompt": {"violence": [{"regex": r"\bkill\b", "severity": "high"}, "fight"]},
        "completion": {"protected_material_text": ["lorem ipsum"]},
    }
    assert policy(**spec).to_json() == spec
    assert policy().to_json() == {"blockAt": "medium"} and policy().idle


@pytest.mark.parametrize(
    "spec, message",
    [
        ([], "f: d.contentFilter: expected an object with blockAt, randomShare, prompt, completion"),
        ({"block": "low"}, "f: d.contentFilter: unknown field 'block'; use blockAt, randomShare, prompt, completion"),
        ({"blockAt": "safe"}, "f: d.contentFilter.blockAt: expected one of low, medium, high, off, got 'safe'"),
        (
            {"randomShare": 0.5},
            'f: d.contentFilter.randomShare: expected {"prompt": share, "completion": share}, each from 0 to 1',
        ),
        (
            {"randomShare": {"prompt": 1.5}},
            "f: d.contentFilter.randomShare.prompt: expected a number from 0 to 1, got 1.5",
        ),
        ({"prompt": []}, "f: d.contentFilter.prompt: expected an object of category to rules"),
        (
            {"prompt": {"protected_material_text": ["x"]}},
            "f: d.contentFilter.prompt: unknown category 'protected_material_text'; for prompts use hate, jailbreak, "
            "self_harm, sexual, violence",
        ),
        (
            {"completion": {"jailbreak": ["x"]}},
            "f: d.contentFilter.completion: unknown category 'jailbreak'; for completions use hate, "
            "protected_material_code, protected_material_text, self_harm, sexual, violence",
        ),
        ({"prompt": {"hate": 3}}, "f: d.contentFilter.prompt.hate: expected a list of rules"),
        (
            {"prompt": {"hate": [3]}},
            'f: d.contentFilter.prompt.hate[0]: expected a term or {"term"|"regex": …, "severity": …}',
        ),
        (
            {"prompt": {"hate": [{"term": "a", "regex": "b"}]}},
            'f: d.contentFilter.prompt.hate[0]: give either "term" or "regex"',
        ),
        (
            {"prompt": {"hate": [{"severity": "low"}]}},
            'f: d.contentFilter.prompt.hate[0]: give either "term" or "regex"',
        ),
        ({"prompt": {"hate": [{"term": " "}]}}, "f: d.contentFilter.prompt.hate[0].term: expected a non-empty string"),
        (
            {"prompt": {"hate": [{"regex": "(a"}]}},
            "f: d.contentFilter.prompt.hate[0].regex: not a valid regular expression (missing ): (a); rules use RE2 "
            "syntax, without backreferences or lookarounds",
        ),
        # A backtracking engine takes exponential time on some patterns; RE2 never does, and refuses
        # what it cannot run in linear time.
        (
            {"prompt": {"hate": [{"regex": "(a)\\1"}]}},
            "f: d.contentFilter.prompt.hate[0].regex: not a valid regular expression (invalid escape sequence: \\1); "
            "rules use RE2 syntax, without backreferences or lookarounds",
        ),
        (
            {"prompt": {"hate": [{"regex": "kill(?!ed)"}]}},
            "f: d.contentFilter.prompt.hate[0].regex: not a valid regular expression (invalid perl operator: (?!); "
            "rules use RE2 syntax, without backreferences or lookarounds",
        ),
        (
            {"prompt": {"hate": [{"term": "a", "severity": "safe"}]}},
            "f: d.contentFilter.prompt.hate[0].severity: expected one of low, medium, high, got 'safe'",
        ),
        (
            {"prompt": {"jailbreak": [{"term": "a", "severity": "low"}]}},
            "f: d.contentFilter.prompt.jailbreak[0].severity: jailbreak is detected or not; it has no severity",
        ),
        (
            {"prompt": {"hate": [{"term": "a", "weight": 2}]}},
            "f: d.contentFilter.prompt.hate[0]: unknown field 'weight'; use term or regex, and severity",
        ),
    ],
)
def test_bad_specs_name_the_field(spec, message):
    assert spec_error(spec) == message


def test_the_deployments_file_reports_filter_errors_as_config_errors():
    with pytest.raises(ConfigError, match=r"^x: d.contentFilter.blockAt: expected one of"):
        cfg.parse_deployment("d", {"model": "gpt-4o", "contentFilter": {"blockAt": 1}}, "x: d")
    dep = cfg.parse_deployment("d", {"model": "gpt-4o", "contentFilter": {"prompt": {"hate": ["x"]}}}, "x: d")
    assert dep.to_json() == {"model": "gpt-4o", "contentFilter": {"blockAt": "medium", "prompt": {"hate": ["x"]}}}


# --- the random share and the forcing header ------------------------------------------------------


def draws(dice, deployment="d", n=200, share=0.3):
    return [dice.hit(deployment, cf.PROMPT, share) for _ in range(n)]


def test_a_seeded_share_is_reproducible_and_near_its_share():
    first, again = draws(cf.Dice(7)), draws(cf.Dice(7))
    assert first == again
    assert 40 <= sum(1 for d in first if d) <= 80  # 30 % of 200, generously
    assert {d for d in first if d} <= set(cf.HARM)
    assert draws(cf.Dice(8)) != first
    assert draws(cf.Dice(7), deployment="other") != first  # each deployment draws its own sequence


def test_shares_of_nothing_and_everything():
    dice = cf.Dice(1)
    assert not any(draws(dice, share=0.0)) and all(draws(dice, share=1.0))


def test_the_forcing_header():
    forced = cf.parse_forced("prompt=violence:low; completion=hate, prompt=jailbreak")
    assert forced.prompt == (("violence", "low"), ("jailbreak", "high"))
    assert forced.completion == (("hate", "high"),)


@pytest.mark.parametrize(
    "value, message",
    [
        ("violence", "'violence': expected prompt=CATEGORY[:SEVERITY] or completion=CATEGORY[:SEVERITY]"),
        ("answer=hate", "'answer=hate': expected prompt=CATEGORY"),
        ("prompt=protected_material_code", "unknown prompt category 'protected_material_code'"),
        ("prompt=hate:extreme", "severity 'extreme'; use safe, low, medium, high"),
        ("completion=protected_material_text:high", "protected_material_text is detected or not; it takes no severity"),
    ],
)
def test_a_bad_forcing_header_says_what_is_wrong(value, message):
    with pytest.raises(cf.FilterSpecError) as caught:
        cf.parse_forced(value)
    assert str(caught.value).startswith(cf.HEADER + ": ") and message in str(caught.value)


# --- answers --------------------------------------------------------------------------------------

TEXT = "The sky is blue today. Here is secret code for you."
ANSWERS = cf.AnswerFilter(policy(completion={"protected_material_code": ["secret code"]}).completion)


def fixed_chat(text=TEXT, **body):
    return chat.fixed(text, {"messages": [], **body}, GPT4O, 5, random.Random(1))


def test_a_blocked_chat_answer_keeps_the_text_before_the_match():
    answer = fixed_chat(n=2)
    assert chat.filter_answers(answer, ANSWERS) == ["protected_material_code"] * 2
    choice = answer.choices[0]
    assert choice.content == "The sky is blue today. Here is" and choice.finish_reason == "content_filter"
    assert choice.tokens == len(choice.token_ids) and answer.completion_tokens == 2 * choice.tokens
    body = answer.body()["choices"][0]
    assert body["finish_reason"] == "content_filter" and body["message"]["content"] == choice.content
    assert body["content_filter_results"]["protected_material_code"] == {"filtered": True, "detected": True}


def test_an_answer_the_rules_do_not_block_stays_as_it_was():
    answer = fixed_chat("Nothing to see.")
    before = answer.body()
    assert chat.filter_answers(answer, ANSWERS) == []
    assert answer.body() == before


def test_a_preset_verdict_cuts_the_answer_in_half():
    answer = fixed_chat()
    ids = list(answer.choices[0].token_ids)
    assert chat.filter_answers(answer, cf.AnswerFilter(preset=(("hate", "high"),))) == ["hate"]
    assert answer.choices[0].token_ids == ids[: len(ids) // 2]


def test_a_blocked_stream_ends_with_the_filter_frame():
    answer = fixed_chat()
    answer.prompt_filter = [
        cf.judge(policy(prompt={"hate": [{"term": "sky", "severity": "low"}]}).prompt, "sky", cf.PROMPT).results()
    ]
    chat.filter_answers(answer, ANSWERS)
    events = answer.stream_events(include_usage=False)
    first, last = events[0], events[-1]
    assert first["choices"] == [] and first["prompt_filter_results"][0]["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "low",
    }
    assert last["choices"][0]["finish_reason"] == "content_filter" and last["choices"][0]["delta"] == {}
    assert last["choices"][0]["content_filter_results"]["protected_material_code"]["filtered"] is True
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[1:])
    assert text == "The sky is blue today. Here is"


def test_tool_calls_pass_the_answer_filter():
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    answer = chat.generate(body, GPT4O, 5, random.Random(1), chat.ChatSettings(Normal(20, 0), 1.0))
    assert chat.filter_answers(answer, cf.AnswerFilter(preset=(("hate", "high"),))) == []
    assert answer.choices[0].finish_reason == "tool_calls"


def test_a_blocked_completion():
    answer = completions.generate(
        {"prompt": ["a", "b"], "max_tokens": 10}, INSTRUCT, 2, random.Random(1), chat.ChatSettings(Normal(20, 0), 1.0)
    )
    assert completions.filter_answers(answer, cf.AnswerFilter(preset=(("violence", "medium"),))) == ["violence"] * 2
    choice = answer.body()["choices"][1]
    assert choice["finish_reason"] == "content_filter" and len(answer.choices[1].token_ids) == 5
    assert choice["content_filter_results"]["violence"] == {"filtered": True, "severity": "medium"}
    frames = answer.stream_events(include_usage=False)
    assert [f["choices"][0]["finish_reason"] for f in frames[1:] if f["choices"][0]["finish_reason"]] == [
        "content_filter"
    ] * 2


def test_a_blocked_responses_answer_is_incomplete_for_the_filter():
    answer = responses.fixed(TEXT, {"input": "x"}, GPT4O, 5, random.Random(1), ANSWERS)
    body = answer.body()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "content_filter"}
    assert body["output"][-1]["content"][0]["text"] == "The sky is blue today. Here is"
    assert answer.filtered == ["protected_material_code"]
    assert answer.stream_timeline()[-1][1]["type"] == "response.incomplete"


# --- the prompts' texts ---------------------------------------------------------------------------


def test_the_texts_each_api_is_judged_on():
    assert cf.chat_texts(
        {
            "messages": [
                {"role": "system", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {}}]},
            ]
        }
    ) == ["a\nb"]
    assert cf.completion_texts({"prompt": ["a", "b"]}) == ["a", "b"]
    assert cf.completion_texts({"prompt": [1, 2]}) == [""]
    assert cf.responses_texts({"input": "b", "instructions": "a"}) == ["a\nb"]
    assert cf.responses_texts({"input": [{"role": "user", "content": [{"type": "input_text", "text": "c"}]}]}) == ["c"]
    assert cf.image_texts({"prompt": "p"}) == ["p"]


# --- the stage ------------------------------------------------------------------------------------


def staged(body, headers=None, mode="generate", path=None, **rules):
    config = make_config(mode=mode)
    config.deployments["gpt-4o"].content_filter = policy(**rules) if rules else None
    flow = make_flow("POST", path or chat_path(), body, headers)
    assert admit(flow, config) is None
    ContentFilter(config).request(flow)
    return flow


KILL = {"messages": [{"role": "user", "content": "kill it"}]}
VIOLENCE = {"prompt": {"violence": [{"term": "kill", "severity": "medium"}]}}


def test_the_stage_answers_a_blocked_prompt_with_azures_400():
    flow = staged(KILL, **VIOLENCE)
    assert flow.response.status_code == 400
    error = json_of(flow.response)["error"]
    assert (error["code"], error["param"], error["type"], error["status"]) == ("content_filter", "prompt", None, 400)
    assert error["innererror"]["content_filter_result"]["violence"] == {"filtered": True, "severity": "medium"}
    assert context_of(flow).filtered == [("prompt", "violence")]


def test_the_stage_leaves_record_mode_to_azure():
    assert staged(KILL, mode="record", **VIOLENCE).response is None


def test_in_replay_mode_prompts_are_judged_but_answers_are_not():
    flow = staged(
        {"messages": [{"role": "user", "content": "hi"}]}, {cf.HEADER: "completion=hate"}, mode="replay", **VIOLENCE
    )
    assert flow.response is None and context_of(flow).answer_filter is None


def test_a_passing_prompt_carries_its_scores_and_the_answer_filter():
    flow = staged(
        {"messages": [{"role": "user", "content": "kill it"}]},
        {cf.HEADER: "completion=hate"},
        prompt={"violence": [{"term": "kill", "severity": "low"}]},
    )
    context = context_of(flow)
    assert flow.response is None
    assert context.prompt_filter[0]["violence"] == {"filtered": False, "severity": "low"}
    assert context.answer_filter.preset == (("hate", "high"),)


def test_with_nothing_to_judge_the_stage_sets_nothing():
    flow = staged(KILL)
    context = context_of(flow)
    assert flow.response is None and context.prompt_filter is None and context.answer_filter is None


def test_a_bad_forcing_header_is_a_400_naming_it():
    flow = staged(KILL, {cf.HEADER: "prompt=nonsense"})
    error = json_of(flow.response)["error"]
    assert flow.response.status_code == 400 and error["param"] == cf.HEADER
    assert "unknown prompt category 'nonsense'" in error["message"]


def test_embeddings_are_not_filtered():
    flow = staged(
        {"input": "kill"},
        {cf.HEADER: "prompt=hate"},
        path="/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21",
    )
    assert flow.response is None


# --- PATCH /++/config -----------------------------------------------------------------------------


def test_patch_replaces_a_deployments_rules_and_keeps_the_rest():
    config = make_config()
    deployments = patch_plan(config, {"contentFilter": {"gpt-4o": {"blockAt": "low"}}}).deployments
    assert deployments["gpt-4o"].content_filter.block_at == "low"
    assert deployments["gpt-4o"].model is config.deployments["gpt-4o"].model
    deployments = patch_plan(
        config, {"contentFilter": {"new": VIOLENCE}, "deployments": {"new": {"model": "gpt-4o-mini"}}}
    ).deployments
    assert deployments["new"].model.name == "gpt-4o-mini" and deployments["new"].content_filter.prompt


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"contentFilter": []}, "contentFilter: expected an object of deployment name to content-filter settings"),
        (
            {"contentFilter": {"nope": {}}},
            "contentFilter.nope: no deployment called 'nope'; define it under deployments",
        ),
        (
            {"contentFilter": {"gpt-4o": {"blockAt": "never"}}},
            "contentFilter.gpt-4o.blockAt: expected one of low, medium, high, off, got 'never'",
        ),
    ],
)
def test_patch_errors_name_the_field(patch, message):
    with pytest.raises(ConfigError) as caught:
        patch_plan(make_config(), patch)
    assert str(caught.value) == message


def test_rules_are_bounded_in_length_and_number_naming_the_field():
    parse_policy, FilterSpecError = cf.parse_policy, cf.FilterSpecError
    long_term = {"prompt": {"hate": [{"term": " a" * 5000}]}}
    with pytest.raises(FilterSpecError, match=r"^cf\.prompt\.hate\[0\]\.term: at most 4096 characters"):
        parse_policy(long_term, "cf")
    many = {"prompt": {"hate": ["word"] * 150, "violence": ["word"] * 51}}
    with pytest.raises(FilterSpecError, match=r"^cf\.prompt\.violence: at most 200 rules"):
        parse_policy(many, "cf")
    assert len(parse_policy({"prompt": {"hate": ["word"] * 200}}, "cf").prompt) == 200

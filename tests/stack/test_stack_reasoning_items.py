"""Reasoning items given back by id alone, through the whole stack in process: with `store`
on, an id a stored response holds is accepted and an id the service never stored gets
Azure's 404 naming it (with `store: false` the body checks refuse every id-only item)."""

from __future__ import annotations


def create(stack, body: dict):
    return stack.post("/openai/v1/responses", json={"model": "o4-mini", **body})


def test_a_stored_reasoning_item_by_id_is_accepted_and_an_unknown_one_is_not(stack):
    first = create(stack, {"input": "Think about it.", "max_output_tokens": 200})
    assert first.status_code == 200, first.text
    reasoning = next(item for item in first.json()["output"] if item["type"] == "reasoning")
    turn = [{"type": "reasoning", "id": reasoning["id"], "summary": []}, {"role": "user", "content": "And then?"}]
    assert create(stack, {"input": turn, "max_output_tokens": 200}).status_code == 200

    unknown = [{"type": "reasoning", "id": "rs_never_stored", "summary": []}, {"role": "user", "content": "Hi"}]
    r = create(stack, {"input": unknown, "max_output_tokens": 200})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Item with id 'rs_never_stored' not found."
    assert r.json()["error"]["param"] == "input"

    r = create(stack, {"input": unknown, "max_output_tokens": 200, "store": False})
    assert r.status_code == 404 and "not persisted" in r.json()["error"]["message"]

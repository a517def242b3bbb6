import datetime
import random

import jsonschema
import pytest

from aoai.openai import schema_values, text

WORDS = text.corpus("o200k_base").words
SEEDS = range(25)

CHECKER = jsonschema.FormatChecker()


@CHECKER.checks("date-time", raises=ValueError)
def _date_time(value):
    # jsonschema needs an optional package for date-time; the standard library suffices here.
    if isinstance(value, str):
        datetime.datetime.fromisoformat(value)
        assert "T" in value
    return True


SCHEMAS = {
    "flat object": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
        "required": ["city", "days", "metric"],
        "additionalProperties": False,
    },
    "nested objects": {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {
                    "b": {
                        "type": "object",
                        "properties": {
                            "c": {"type": "object", "properties": {"d": {"type": "string"}}, "required": ["d"]}
                        },
                        "required": ["c"],
                    }
                },
                "required": ["b"],
            }
        },
        "required": ["a"],
    },
    "array bounds": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
    "exact array": {"type": "array", "items": {"type": "string"}, "minItems": 5, "maxItems": 5},
    "many items": {"type": "array", "items": {"type": "number"}, "minItems": 7},
    "empty array only": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    "enum": {"type": "string", "enum": ["red", "green", "blue"]},
    "mixed enum": {"enum": [1, "two", None, 3.5]},
    "const": {"const": {"fixed": [1, 2]}},
    "integer bounds": {"type": "integer", "minimum": 10, "maximum": 12},
    "integer exclusive": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
    "integer negative maximum": {"type": "integer", "maximum": -5},
    "integer exclusive maximum only": {"type": "integer", "exclusiveMaximum": 0},
    "integer fractional bounds": {"type": "integer", "minimum": 0.5, "maximum": 3.5},
    "number bounds": {"type": "number", "minimum": -1.5, "maximum": 1.5},
    "number exclusive": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "number minimum only": {"type": "number", "minimum": 1000},
    "date-time": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "time": {"type": "string", "format": "time"},
    "email": {"type": "string", "format": "email"},
    "uuid": {"type": "string", "format": "uuid"},
    "ipv4": {"type": "string", "format": "ipv4"},
    "uri": {"type": "string", "format": "uri", "pattern": "^https://"},
    "string lengths": {"type": "string", "minLength": 40, "maxLength": 45},
    "short string": {"type": "string", "maxLength": 3},
    "refs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"points": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 1}},
        "required": ["points"],
    },
    "ref at the root": {"$defs": {"name": {"type": "string", "minLength": 2}}, "$ref": "#/$defs/name"},
    "anyOf with null": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
    "oneOf": {"oneOf": [{"type": "integer", "minimum": 5, "maximum": 6}, {"type": "boolean"}]},
    "allOf": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer", "minimum": 1}}, "required": ["b"]},
        ]
    },
    "allOf with ref": {
        "$defs": {
            "base": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}, "required": ["id"]}
        },
        "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"n": {"type": "integer"}}, "required": ["n"]}],
    },
    "type list": {"type": ["integer", "null"], "minimum": 3, "maximum": 3},
    "only null": {"type": ["null"]},
    "untyped properties": {"properties": {"k": {"type": "string"}}, "required": ["k"]},
    "recursive": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["name", "children"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/node",
    },
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_generated_values_validate(name):
    schema = SCHEMAS[name]
    validator = jsonschema.Draft202012Validator(schema, format_checker=CHECKER)
    for seed in SEEDS:
        value = schema_values.value_for(schema, random.Random(seed), WORDS)
        errors = [e.message for e in validator.iter_errors(value)]
        assert errors == [], f"seed {seed}: {value!r}"


def test_values_follow_the_schema_not_just_any_valid_value():
    rng = random.Random(0)
    assert schema_values.value_for({"const": "x"}, rng, WORDS) == "x"
    assert schema_values.value_for({"type": "integer", "minimum": 7, "maximum": 7}, rng, WORDS) == 7
    assert schema_values.value_for({"type": ["null"]}, rng, WORDS) is None
    assert schema_values.value_for({"anyOf": [{"type": "null"}, {"type": "boolean"}]}, rng, WORDS) in (True, False)
    seen = {schema_values.value_for(SCHEMAS["enum"], random.Random(s), WORDS) for s in range(40)}
    assert seen == {"red", "green", "blue"}


def test_optional_properties_are_filled_near_the_top():
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    value = schema_values.value_for(schema, random.Random(1), WORDS)
    assert set(value) == {"a", "b"}


def test_same_generator_same_value():
    schema = SCHEMAS["refs"]
    assert schema_values.value_for(schema, random.Random(5), WORDS) == schema_values.value_for(
        schema, random.Random(5), WORDS
    )

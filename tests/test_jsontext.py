"""vifrules.jsontext: the dom0 code's own strict JSON, checked against the
standard library on random values, under each dom0 interpreter."""

import json
import os
import random
import subprocess

import pytest

from test_lifecycle import PYTHONS
from vifrules import jsontext

LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "xapi-plugin")
TEXT_CHARS = 'ab"\\/\b\f\n\r\t\x01\x1f ~\x7f\u00e9\u20ac\U0001f600-:'


def _random_value(rng, depth=0):
    kind = rng.choice(["null", "bool", "int", "float", "str", "list", "dict"]
                      if depth < 4 else ["int", "str", "bool"])
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 7, 2 ** 40, -(2 ** 70), rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -1.25e-7, 3.0, 1e300, rng.random()])
    if kind == "str":
        return "".join(rng.choice(TEXT_CHARS) for _ in range(rng.randint(0, 8)))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return dict(("".join(rng.choice(TEXT_CHARS) for _ in range(rng.randint(0, 4))),
                 _random_value(rng, depth + 1)) for _ in range(rng.randint(0, 4)))


def test_same_text_and_values_as_the_standard_library():
    rng = random.Random(11)
    for _ in range(3000):
        value = _random_value(rng)
        text = jsontext.dumps(value)
        assert text == json.dumps(value, sort_keys=True)
        assert jsontext.loads(text) == value
        spaced = json.dumps(value, indent=2, ensure_ascii=False)
        assert jsontext.loads(spaced) == value
        assert jsontext.loads(spaced.encode("utf-8")) == value


@pytest.mark.parametrize("text", [
    "", " ", "{", "[1,]", '{"a":1,}', '{"a" 1}', "{'a': 1}", '{"a":1}x', "01", "-", "1.",
    ".5", "1e", "+1", "NaN", "Infinity", "tru", "nul", '"\\x"', '"\\u12G4"', '"a\nb"',
    '"open', '{"a": 1, "a": 2}', "[" * 40 + "]" * 40, b"\xff\xfe",
])
def test_refuses(text):
    with pytest.raises(ValueError):
        jsontext.loads(text)


def test_refuses_to_write_what_json_cannot_hold():
    for value in (float("nan"), float("inf"), {1: "x"}, object(), [[[]]] * 0 + [set()]):
        with pytest.raises(ValueError):
            jsontext.dumps(value)


PROBE = r'''
import sys
from vifrules import jsontext
for text in sys.stdin.read().split("\n"):
    if text:
        sys.stdout.write(jsontext.dumps(jsontext.loads(text)) + "\n")
'''


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_round_trip_under_each_dom0_python(version):
    python = PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("%s is not installed at %s" % (version, python))
    rng = random.Random(5)
    values = [_random_value(rng) for _ in range(300)]
    lines = "\n".join(json.dumps(v, sort_keys=True) for v in values) + "\n"
    env = dict(os.environ, PYTHONPATH=LIBRARY)
    probe = subprocess.run([python, "-c", PROBE], input=lines, env=env, timeout=60,
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout == lines

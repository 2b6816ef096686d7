"""dom0 code must run on Python 2.4 (XenServer 5.x) up to 3.x."""

import glob
import os

import pytest

import py24check

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOM0_FILES = sorted(
    glob.glob(os.path.join(TOP, "xapi-plugin", "vifrules", "*.py")) +
    [os.path.join(TOP, "xapi-plugin", "vif_rules.py"),
     os.path.join(TOP, "host-rules", "host_rules.py"),
     os.path.join(TOP, "patches", "vif-patch")] +
    [p for p in [os.path.join(TOP, "xapi-plugin", "vif_rules"),
                 os.path.join(TOP, "tests", "xapi_standin", "XenAPIPlugin.py")]
     if os.path.exists(p)])


@pytest.mark.parametrize("path", DOM0_FILES, ids=[os.path.relpath(p, TOP) for p in DOM0_FILES])
def test_dom0_code_uses_only_python_24_constructs(path):
    with open(path) as handle:
        source = handle.read()
    assert py24check.problems(source, path) == []


SHOULD_BE_CAUGHT = {
    "except as": "try:\n    pass\nexcept ValueError as e:\n    pass\n",
    "conditional": "x = 1 if True else 2\n",
    "with": "with open('f') as f:\n    pass\n",
    "unified try": "try:\n    pass\nexcept ValueError:\n    pass\nfinally:\n    pass\n",
    "set literal": "x = {1, 2}\n",
    "dict comprehension": "x = {k: 1 for k in 'ab'}\n",
    "bytes": "x = b'abc'\n",
    "format": "x = '{}'.format(1)\n",
    "print function": "print('x')\n",
    "octal": "x = 0o644\n",
    "any": "x = any([1])\n",
    "functools": "import functools\n",
    "hashlib": "from hashlib import md5\n",
    "check_output": "import subprocess\nsubprocess.check_output(['true'])\n",
    "class decorator": "@staticmethod\nclass X(object):\n    pass\n",
    "setter": "class X(object):\n    @p.setter\n    def p(self, v):\n        pass\n",
    "json unguarded": "import json\n",
    "relative import": "from . import x\n",
    "startswith tuple": "'a'.startswith(('a', 'b'))\n",
    "empty class parens": "class X():\n    pass\n",
    "f-string": "x = f'{1}'\n",
    "star unpacking": "a, *b = [1, 2]\n",
    "star before positional": "f(*a, b)\n",
    "defaultdict": "import collections\nd = collections.defaultdict(list)\n",
}


@pytest.mark.parametrize("name", sorted(SHOULD_BE_CAUGHT))
def test_the_checker_catches(name):
    assert py24check.problems(SHOULD_BE_CAUGHT[name]) != []


def test_the_checker_accepts_24_idioms():
    source = ("import sys\ntry:\n    import json\nexcept ImportError:\n    import simplejson as json\n"
              "try:\n    try:\n        x = 1\n    except ValueError:\n        e = sys.exc_info()[1]\n"
              "finally:\n    pass\nclass X(object):\n    @property\n    def p(self):\n"
              "        return sorted([2, 1])\n")
    assert py24check.problems(source) == []

"""A static check that source parses as Python 3 AND uses nothing newer than
Python 2.4, for the code that runs in every dom0 (XenServer 5.5 has 2.4).
vermin alone misses several of these (except-as, conditional expressions,
with, unified try/except/finally)."""

import ast
import io
import tokenize

BANNED_MODULES = ("functools", "hashlib", "uuid", "ipaddress", "argparse", "contextlib")
BANNED_CALLS = ("any", "all", "next", "print", "format", "bytearray", "memoryview")
BANNED_ATTRS = ("check_output", "defaultdict", "namedtuple", "OrderedDict", "partition",
                "rpartition", "relpath", "format", "setter", "deleter", "total_seconds")


def problems(source, filename="<source>"):
    """[(line, what)] of every construct newer than Python 2.4."""
    tree = ast.parse(source, filename)
    found = []
    json_guarded = []
    # f(a, *rest) is old syntax; other uses of * (f(*a, b), [*a], a, *b = x) are not.
    call_stars = set(id(n.args[-1]) for n in ast.walk(tree)
                     if isinstance(n, ast.Call) and n.args and isinstance(n.args[-1], ast.Starred))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            found.append((line, "with statement (2.5)"))
        elif isinstance(node, ast.IfExp):
            found.append((line, "conditional expression (2.5)"))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.append((line, "except ... as (2.6)"))
        elif isinstance(node, ast.Try):
            if node.handlers and node.finalbody:
                found.append((line, "try/except/finally in one statement (2.5)"))
            for handler in node.handlers:
                if _names(handler.type) & {"ImportError"}:
                    for inner in node.body:
                        if isinstance(inner, ast.Import):
                            json_guarded.extend(a.name for a in inner.names)
        elif isinstance(node, ast.ClassDef):
            if node.decorator_list:
                found.append((line, "class decorator (2.6)"))
        elif isinstance(node, (ast.Set, ast.SetComp, ast.DictComp)):
            found.append((line, "set literal or comprehension (2.7)"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            found.append((line, "bytes literal (2.6)"))
        elif isinstance(node, ast.Starred) and id(node) not in call_stars:
            found.append((line, "unpacking with * outside a call's last argument (3.x)"))
        elif isinstance(node, (ast.JoinedStr, ast.NamedExpr, ast.Nonlocal,
                               ast.AsyncFunctionDef, ast.Await, ast.YieldFrom)):
            found.append((line, "%s (Python 3 only)" % type(node).__name__))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((line, "relative import (2.5)"))
            if node.module in BANNED_MODULES or (node.module or "").split(".")[0] in BANNED_MODULES:
                found.append((line, "module %s (2.5+)" % node.module))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in BANNED_MODULES:
                    found.append((line, "module %s (2.5+)" % alias.name))
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
                found.append((line, "%s() (2.5+)" % node.func.id))
            if isinstance(node.func, ast.Attribute):
                if node.func.attr in BANNED_ATTRS:
                    found.append((line, ".%s (2.5+)" % node.func.attr))
                if node.func.attr in ("startswith", "endswith") and node.args and \
                        isinstance(node.args[0], ast.Tuple):
                    found.append((line, "%s(tuple) (2.5)" % node.func.attr))
        elif isinstance(node, ast.Attribute) and node.attr in BANNED_ATTRS:
            found.append((line, ".%s (2.5+)" % node.attr))
        elif isinstance(node, (ast.FunctionDef,)):
            args = node.args
            if args.kwonlyargs or getattr(args, "posonlyargs", []):
                found.append((line, "keyword-only or positional-only arguments (3.x)"))
            if node.returns or any(a.annotation for a in args.args):
                found.append((line, "annotations (3.x)"))
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Attribute):
                    found.append((line, "@%s decorator (2.6)" % decorator.attr))
        elif isinstance(node, ast.Yield):
            pass
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "json" and "json" not in json_guarded:
                    found.append((node.lineno, "json without a simplejson fallback (2.6)"))
    found.extend(_token_problems(source))
    found.extend(_empty_class_parens(source))
    return sorted(set(found))


def _names(node):
    if node is None:
        return set()
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Tuple):
        return set().union(*[_names(e) for e in node.elts])
    return set()


def _token_problems(source):
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NUMBER:
            text = token.string.lower()
            if text.startswith(("0o", "0b")) or "_" in text:
                found.append((token.start[0], "number literal %s (2.6+)" % token.string))
            elif len(text) > 1 and text[0] == "0" and text[1].isdigit():
                found.append((token.start[0], "old octal literal %s (not Python 3)" % token.string))
    return found


def _empty_class_parens(source):
    found = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, token in enumerate(tokens[:-3]):
        if token.type == tokenize.NAME and token.string == "class" and \
                tokens[i + 2].string == "(" and tokens[i + 3].string == ")":
            found.append((token.start[0], "class X(): with empty parentheses (2.5)"))
    return found

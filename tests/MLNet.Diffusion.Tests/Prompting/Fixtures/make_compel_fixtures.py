#!/usr/bin/python3
"""Runs compel's own prompt parser (damian0815/compel src/compel/prompt_parser.py, unchanged) on every prompt its
published parser tests (test/test_prompt_parser.py) parse, plus a few of ours, and writes compel_prompts.json with
the flattened structure (what compel hands to its conditioning code) or the exception compel raised.

Usage (Debian bookworm: python3, python3-pyparsing 3.0.9, with the DelimitedList shim below):
  /usr/bin/python3 make_compel_fixtures.py --compel REPO --out compel_prompts.json
where REPO is a checkout of damian0815/compel; its commit is written into the JSON ("meta").
"""
import argparse
import ast
import json
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--compel", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--commit", default="c60b9fbc7fa9eb443af96c326951589b5ca7a299")
args = ap.parse_args()

sys.path.insert(0, args.compel + "/src/compel")
import pyparsing  # noqa: E402

if not hasattr(pyparsing, "DelimitedList"):
    # pyparsing 3.0.9 (Debian bookworm) has the function delimited_list; 3.1 added the class DelimitedList with the
    # same meaning (expr, ",", min) that compel uses.
    pyparsing.DelimitedList = lambda expr, min=None: pyparsing.delimited_list(expr, min=min)
from prompt_parser import (PromptParser, Blend, Conjunction, FlattenedPrompt, Fragment,  # noqa: E402
                           CrossAttentionControlSubstitute)

with open(args.compel + "/test/test_prompt_parser.py", encoding="utf-8") as f:
    tree = ast.parse(f.read())
published = []
for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "parse_prompt" \
            and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value not in published:
        published.append(node.args[0].value)

ours = [
    "red++ circle", "a red-- circle", "(red circle)1.3", "(red circle)++", "(red circle)-", "red+ (blue)0.8 green-",
    "a (b (c)1.5)2", "(a, b)1.2", "a \\(literal\\) b", "\\\"quoted\\\" word", "(cat, dog).blend(0.3, 0.7)",
    "(\"a red circle\", \"a blue square\").blend(0.5, 0.5)", "(\"a\", \"b\").and()", "(\"a++\", \"b\").and(0.3, 0.7)",
    "word+++", "word---", "(x)0", "(x)-1", "(x).attend(1.25)", "a,b,c", "  spaced   out  ", "(unclosed", "closed)",
    "hot-dog+", "a+b", "1girl, (solo)1.1", "(a)1.1 (b)1.1", "\"a\"+ \"b\"-", "(a)+(b)-",
]


def frag(x):
    if isinstance(x, Fragment):
        return [x.text, x.weight]
    if isinstance(x, CrossAttentionControlSubstitute):
        return {"swap": [[frag(o) for o in x.original], [frag(e) for e in x.edited]]}
    raise TypeError(type(x))


def prompt(p):
    if isinstance(p, FlattenedPrompt):
        return {"fragments": [frag(c) for c in p.children]}
    if isinstance(p, Blend):
        return {"blend": [prompt(q) for q in p.prompts], "weights": [float(w) for w in p.weights],
                "normalize": p.normalize_weights}
    raise TypeError(type(p))


def run(text):
    try:
        c = PromptParser().parse_conjunction(text)
        return {"prompt": text, "prompts": [prompt(p) for p in c.prompts], "weights": [float(w) for w in c.weights],
                "loras": [[l.model, float(l.weight)] for l in c.lora_weights]}
    except Exception as e:
        return {"prompt": text, "error": type(e).__name__ + ": " + str(e)}


out = {
    "meta": {"compel": "damian0815/compel src/compel/prompt_parser.py @ " + args.commit,
             "python": sys.version.split()[0], "pyparsing": pyparsing.__version__},
    "published": [run(p) for p in published],
    "ours": [run(p) for p in ours],
}
with open(args.out, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print("wrote", args.out, len(out["published"]), len(out["ours"]))

"""Glob syntax exactly as Pachyderm reads it: a port of github.com/pachyderm/ohmyglob.

Pachyderm compiles every pfs glob with ohmyglob (separator `/`): a lexer and a
parser taken from gobwas/glob, then a compiler to a backtracking regex.  To
cut datums the way Pachyderm does, dpl follows the same three steps, quirks
included (a `!`, `+` or `@` not followed by `(` is plain text; `,` is a
separator only inside `{}`, `|` only inside `()`; `[a!b]` is a negated
class), so the same pattern matches the same paths and captures the same
groups:

    *  any run of non-separators      **  anything, separators included
    ?  one non-separator              [abc] [!abc] [a-z]  character classes
    {a,b}  alternatives, not captured (a|b) @(a|b)  one of, captured
    *(a|b) zero or more, captured     +(a|b)  one or more, captured
    ?(a|b) zero or one, captured      !(a|b)  anything but, captured

`translate` returns the regex body and what the datum code needs to know of
it: how many groups it captures, how many separators a match can hold (a
fixed number lets `globs.match` work per depth, vectorised), and whether it
needs lookahead (`!(...)`), which Arrow's RE2 lacks.

A `(` or `{` never closed is closed at the end, as ohmyglob does (so
`(a+|b)`, where `+|b)` is text, compiles); a close or separator that has
nothing to close, which crashes ohmyglob's parser, is refused in one sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CLOSE_NEG = "\uffff"  # where a negation's scope may end (ohmyglob's closeNegDummy)
BOUNDARY = "\ufffe"  # a term that bounds a negation's scope (boundaryDummy)

# Character classes named in POSIX style, as ohmyglob's parser expands them.
POSIX = {
    ":alnum:": "0-9A-Za-z", ":alpha:": "A-Za-z", ":ascii:": "\x00-\x7f", ":blank:": "\t ",
    ":cntrl:": "\x00-\x1f\x7f", ":digit:": "0-9", ":graph:": "!-~]", ":lower:": "a-z",
    ":print:": " -~", ":punct:": "!-/:-@[-`{-~", ":space:": "\t\n\v\f\r ", ":upper:": "A-Z",
    ":word:": "0-9A-Za-z_", ":xdigit:": "0-9A-Fa-f",
}

_BASIC = "?*[{("
_EXTENDED = _BASIC + "@!^+"
_IN_CAPTURE = _EXTENDED + ")|"
_IN_TERMS = _EXTENDED + "},"


@dataclass
class Translation:
    body: str  # the regex, unanchored, for Python's re (and RE2 when `lookahead` is False)
    groups: int  # capture groups, numbered as $1, $2, ... in join_on and group_by
    separators: frozenset[int] | None  # how many separators a match may hold; None: any number
    lookahead: bool  # uses (?!...), which RE2 cannot run


def go_quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta, which ohmyglob uses for literal text and classes."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in text)


# ------------------------------------------------------------------- lexer


def _tokens(pattern: str):
    """ohmyglob's lexer: yields (kind, text) tokens."""
    pos, terms, captures = 0, 0, 0
    n = len(pattern)

    def text(breakers: str):
        nonlocal pos
        out, escaped = [], False
        while pos < n:
            c = pattern[pos]
            if not escaped:
                if c == "\\":
                    escaped = True
                    pos += 1
                    continue
                if c in breakers:
                    break
            escaped = False
            out.append(c)
            pos += 1
        return ("text", "".join(out)) if out else None

    while pos < n:
        c = pattern[pos]
        nxt = pattern[pos + 1] if pos + 1 < n else ""
        if c == "{":
            terms += 1
            pos += 1
            yield ("terms_open", c)
        elif c == "," and terms:
            pos += 1
            yield ("separator", c)
        elif c == "}" and terms:
            terms -= 1
            pos += 1
            yield ("terms_close", c)
        elif c == "|" and captures:
            pos += 1
            yield ("separator", c)
        elif c == "[":
            pos += 1
            not_, data, escaped, posix = False, [], False, False
            while True:
                if pos >= n:
                    raise ValueError("'[' is never closed")
                r = pattern[pos]
                pos += 1
                if not escaped:
                    if r == "\\":
                        escaped = True
                        continue
                    if r == "[":
                        posix = True
                    if r == "]":
                        if posix:
                            posix = False
                        else:
                            break
                    if not not_ and r in "!^":
                        not_ = True
                        continue
                escaped = False
                data.append(r)
            yield ("range", (not_, "".join(data)))
        elif c == "(":
            captures += 1
            pos += 1
            yield ("capture_open", "@")
        elif c in "@!^+" and nxt == "(":
            if c == "^":  # ohmyglob lexes it, then its compiler has no quantifier `^`
                raise ValueError("'^(' is not a glob operator (write '!(' for 'anything but')")
            captures += 1
            pos += 2
            yield ("capture_open", c)
        elif c in "@!^+":
            tok = text(_BASIC)
            if tok:
                yield tok
        elif c == ")" and captures:
            captures -= 1
            pos += 1
            yield ("capture_close", c)
        elif c == "?":
            pos += 1
            if nxt == "(":
                captures += 1
                pos += 1
                yield ("capture_open", "?")
            else:
                yield ("single", c)
        elif c == "*":
            pos += 1
            if nxt == "*":
                if pattern[pos + 1 : pos + 2] == "(":  # `**(` is `*` then `*(`
                    yield ("any", c)
                else:
                    pos += 1
                    yield ("super", "**")
            elif nxt == "(":
                captures += 1
                pos += 1
                yield ("capture_open", "*")
            else:
                yield ("any", c)
        else:
            tok = text(_IN_TERMS if terms else _IN_CAPTURE if captures else _EXTENDED)
            if tok:
                yield tok
            else:  # cannot happen: every breaker is handled above; never loop forever
                raise ValueError(f"unexpected {c!r}")


# ------------------------------------------------------------------ parser


@dataclass
class _Node:
    kind: str  # pattern, anyof, capture, text, any, super, single, list
    value: object = None
    children: list = field(default_factory=list)
    parent: "_Node | None" = None

    def add(self, child: "_Node") -> "_Node":
        child.parent = self
        self.children.append(child)
        return child


def _parse(pattern: str) -> _Node:
    root = tree = _Node("pattern")
    for kind, value in _tokens(pattern):
        if kind == "text":
            tree.add(_Node("text", value))
        elif kind in ("any", "super", "single"):
            tree.add(_Node(kind))
        elif kind == "range":
            not_, chars = value
            for name, expansion in POSIX.items():
                chars = chars.replace(name, expansion)
            tree.add(_Node("list", (not_, chars)))
        elif kind in ("terms_open", "capture_open"):
            container = tree.add(_Node("anyof" if kind == "terms_open" else "capture", value))
            tree = container.add(_Node("pattern"))
        elif kind == "separator":
            if tree.parent is None:
                raise ValueError(f"{value!r} separates nothing")
            tree = tree.parent.add(_Node("pattern"))
        else:  # a close: ohmyglob climbs out of whatever container is innermost
            if tree.parent is None:
                raise ValueError(f"{value!r} closes nothing")
            tree = tree.parent.parent
    return root  # a `(` or `{` left open is closed at the end, as ohmyglob does


# ---------------------------------------------------------------- compiler


def _compile(node: _Node, dot: str, sep: str) -> tuple[str, frozenset[int] | None]:
    """A node's regex (with ohmyglob's markers) and how many separators it can match."""
    k = node.kind
    if k == "text":
        return go_quote_meta(node.value) + BOUNDARY, frozenset([node.value.count(sep)] if sep else [0])
    if k == "any":
        return dot + "*" + BOUNDARY, frozenset([0])
    if k == "super":
        return ".*" + BOUNDARY, None if sep else frozenset([0])
    if k == "single":
        return dot, frozenset([0])
    if k == "list":
        not_, chars = node.value
        plain = not not_ and "-" not in chars and sep not in chars
        return "[" + ("^" if not_ else "") + go_quote_meta(chars) + "]", frozenset([0]) if plain or not sep else frozenset([0, 1])
    parts = [_compile(c, dot, sep) for c in node.children]
    if k == "pattern":
        counts: frozenset[int] | None = frozenset([0])
        for _, c in parts:
            counts = None if counts is None or c is None else frozenset(a + b for a in counts for b in c)
            if counts is not None and len(counts) > 64:
                counts = None
        return "".join(p for p, _ in parts), counts
    if not parts:
        return "", frozenset([0])
    union: frozenset[int] | None = frozenset()
    for _, c in parts:
        union = None if union is None or c is None else union | c
    if k == "anyof":
        return "(?:" + "|".join(p for p, _ in parts) + ")", union
    q = node.value
    if q == "!":
        alts = (CLOSE_NEG + "|").join(p for p, _ in parts)
        return "((?:(?!(?:" + alts + CLOSE_NEG + "))" + dot + "*))", frozenset([0])
    alts = "|".join(p for p, _ in parts)
    if q == "@":
        return "(" + alts + ")", union
    if q == "?":
        return "((?:" + alts + ")?)", None if union is None else union | {0}
    repeat = frozenset([0]) if union == frozenset([0]) else None
    return "((?:" + alts + ")" + ("*" if q == "*" else "+") + ")", repeat


def translate(pattern: str, sep: str = "/") -> Translation:
    """ohmyglob.Compile(pattern, sep), as a regex body; ValueError says what is wrong."""
    tree = _parse(pattern)
    dot = f"[^{go_quote_meta(sep)}]" if sep else "."
    regex, counts = _compile(tree, dot, sep)
    # A negation matches up to the next bounding term, or to the end when none follows.
    index = regex.find(CLOSE_NEG + ")")
    if index > 0:
        regex = regex.replace(CLOSE_NEG, "" if BOUNDARY in regex[index:] else "$")
    regex = regex.replace(BOUNDARY, "")
    try:
        groups = re.compile(regex).groups
    except re.error as e:
        raise ValueError(str(e)) from None
    return Translation(regex, groups, counts, "(?!" in regex)


def fill(template: str, match: list[str]) -> str:
    """ohmyglob's Replace: `$n` / `${n}` is group n (`$0` the whole match), `$$` is `$`.

    A reference to a group the glob lacks is empty, and a malformed `$` is
    kept as text, as in Go's regexp.Expand that ohmyglob copies.
    """
    return filler(template)(match)


def filler(template: str):
    """`fill` for one template, parsed once: a function of the match list."""
    parts: list[str | int] = []  # literal text, or a group number
    i = 0
    while True:
        j = template.find("$", i)
        if j < 0:
            parts.append(template[i:])
            break
        parts.append(template[i:j])
        if template[j + 1 : j + 2] == "$":
            parts.append("$")
            i = j + 2
            continue
        m = re.match(r"\$(?:\{(\d+)\}|(\d+))", template[j:], re.ASCII)
        if not m:
            parts.append("$")
            i = j + 1
            continue
        name = m.group(1) or m.group(2)
        parts.append(int(name) if not (name[0] == "0" and len(name) > 1) and len(name) < 9 else -1)
        i = j + m.end()

    parts = [p for p in parts if p != ""]
    if len(parts) == 1 and isinstance(parts[0], int) and parts[0] >= 0:  # "$1", the usual join_on: no joining
        n = parts[0]
        return lambda match: match[n] if n < len(match) else ""

    def apply(match: list[str]) -> str:
        return "".join([p if isinstance(p, str) else match[p] if 0 <= p < len(match) else "" for p in parts])

    return apply


def references(template: str) -> list[int]:
    """The group numbers a join_on / group_by template refers to."""
    return [int(a or b) for a, b in re.findall(r"(?<!\$)\$(?:\{(\d+)\}|(\d+))", template.replace("$$", ""), re.ASCII)]

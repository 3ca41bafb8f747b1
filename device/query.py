"""Query syntax: weighted and negative terms, as rclip users enjoy.

    beach -people           beach, but not people
    2:dog + cat             twice as much dog as cat
    sunset - 0.5:clouds     a little less cloudy
    @c2dd0de7c538df8d + night   like that photo, at night
    "-5 degrees"            quotes keep a term literal
    "@home"                 quoted, an @ is plain text

Words join the current term; a ``+`` or ``-`` standing alone, or at the start
of a word, starts a new term with that sign. A term may start with
``WEIGHT:`` (a number, 0 < WEIGHT <= 10). ``@ID`` stands for the stored
embedding of a photo: an unquoted word starting with ``@`` is always a photo
id (case-insensitive) and a term of its own; one that cannot be an id is an
error, not text. Quote it (``"@home"``) to search for the text. The query vector is the weighted sum of the terms'
embeddings, L2 normalised; hyphens inside words (``t-shirt``) are just text.
"""

from __future__ import annotations

import dataclasses
import re

from device.errors import QueryInvalid

MAX_TERMS = 8
MAX_WEIGHT = 10.0
_WEIGHT = re.compile(r"^(\d+(?:\.\d+)?|\.\d+):(.*)$", re.S)
_ITEM = re.compile(r"^[0-9a-f]{16}$")


@dataclasses.dataclass(frozen=True)
class Term:
    """One term of a query.

    Attributes:
        weight: signed weight (negative for excluded terms).
        text: the text to embed, or ``None`` for an item reference.
        item_id: the referenced photo for ``@ID`` terms.
    """

    weight: float
    text: str | None = None
    item_id: str | None = None


def _tokens(query: str) -> list[tuple[str, bool]]:
    """Whitespace-separated tokens; quoted runs stay whole. (token, was_quoted)."""
    out, i, n = [], 0, len(query)
    while i < n:
        if query[i].isspace():
            i += 1
            continue
        if query[i] == '"' and '"' in query[i + 1:]:
            end = query.index('"', i + 1)
            out.append((query[i + 1:end], True))
            i = end + 1
            continue
        j = i
        while j < n and not query[j].isspace():
            j += 1
        out.append((query[i:j], False))
        i = j
    return out


def parse(query: str) -> list[Term]:
    """Split ``query`` into weighted terms.

    Raises:
        QueryInvalid: a dangling operator, a bad weight, no positive term, or
            more than :data:`MAX_TERMS` terms.
    """
    groups: list[tuple[float, list[tuple[str, bool]]]] = []  # (sign, [(word, was_quoted)])
    sign, dangling = 1.0, False  # dangling: an operator waits for its term
    alone = False  # the last term is an @ID: the next word starts a term of its own
    for token, quoted in _tokens(query):
        if not quoted and token in {"+", "-"}:
            sign, dangling = (1.0 if token == "+" else -1.0), True
            continue
        # "-people" or "+2:cat" start a signed term; "-5 degrees" stays text.
        if (not quoted and len(token) > 1 and token[0] in "+-"
                and (not token[1].isdigit() or _WEIGHT.match(token[1:]))):
            sign, dangling, token = (1.0 if token[0] == "+" else -1.0), True, token[1:]
        reference = not quoted and _is_reference(token)
        if dangling or not groups or alone or reference:
            groups.append((sign, [(token, quoted)]))
        else:
            groups[-1][1].append((token, quoted))
        sign, dangling, alone = 1.0, False, reference
    if dangling:
        raise QueryInvalid("the query ends with an operator: put a term after '+' or '-'")
    terms = [_term(sign, words) for sign, words in groups]
    if not terms:
        raise QueryInvalid("the query is empty: type what you are looking for")
    if len(terms) > MAX_TERMS:
        raise QueryInvalid(f"the query has {len(terms)} terms; the limit is {MAX_TERMS}")
    if not any(t.weight > 0 for t in terms):
        raise QueryInvalid("the query needs at least one term that is not excluded with '-'")
    return terms


def _is_reference(token: str) -> bool:
    """Whether an unquoted token is an ``@ID`` (``@abc``, ``2:@abc``), not text."""
    match = _WEIGHT.match(token)
    word = match.group(2) if match else token
    return len(word) > 1 and word.startswith("@")


def _term(sign: float, tokens: list[tuple[str, bool]]) -> Term:
    weight = 1.0
    words = [word for word, _ in tokens]
    # A quoted first word is literal text ("2:1 ratio"), never a weight.
    match = None if tokens[0][1] else _WEIGHT.match(words[0])
    if match:
        weight = float(match.group(1))
        rest = match.group(2)
        words = ([rest] if rest else []) + words[1:]
        if not 0 < weight <= MAX_WEIGHT:
            raise QueryInvalid(f"a term's weight must be above 0 and at most {MAX_WEIGHT:g}")
    text = " ".join(words).strip()
    if not text:
        raise QueryInvalid("a weight must be followed by a term, as in 2:dog")
    if not tokens[0][1] and _is_reference(tokens[0][0]):
        ident = text[1:].lower()
        if not _ITEM.match(ident):
            raise QueryInvalid(f"no photo with id {text[1:]!r} (ids are 16 hex digits; "
                               f"to search for the text, quote it: \"{text}\")")
        return Term(weight=sign * weight, item_id=ident)
    if not any(c.isalnum() for c in text):
        raise QueryInvalid(f"the term {text!r} has no letters or digits")
    return Term(weight=sign * weight, text=text)

"""Surface forms of the word-problem families: who, what, and how the sentence is put together.

A word problem is a story of a start amount and two changes, asked as a question:
"Ann has 17 apples. Then Ann finds 25 more and gives away 9. How many apples does Ann have now?"
The numbers and the verbs (which say + or -) are all that matter; names, items and sentence shapes are noise
that a base which learned arithmetic, not templates, must see through. So the forms come in two disjoint pools:

- *trained forms* (`arith_word`): pseudo-word names and items (thousands, built from syllables) and most
  combinations of the trained sentence parts. The embedded base is built on these only.
- *unseen forms* (`arith_word_unseen`): real names and items, sentence parts never trained on, and combinations of
  trained parts held out of training. Neither the base nor RL sees them; the transfer task measures them.

The verbs are shared by both pools: a verb's sign cannot be guessed, so new forms recombine known verbs in new
sentences rather than invent verbs.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re

from maporl.errors import UsageError

# fmt: off
UNSEEN_NAMES = (
    "Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Mia", "Omar", "Priya",
    "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wendy", "Xavier", "Yusuf", "Zoe", "Olga", "Marco", "Nadia",
    "Leo", "Ingrid",
)
UNSEEN_ITEMS = (
    "apples", "coins", "books", "stamps", "shells", "cards", "pens", "marbles", "stickers", "buttons", "pencils",
    "cookies", "candles", "tickets", "beads", "rocks",
)
# fmt: on

PLUS = ("gets {n} more", "finds {n} more", "buys {n} more", "wins {n} more", "receives {n} more")
MINUS = ("gives away {n}", "loses {n}", "sells {n}", "eats {n}", "drops {n}")

# Sentence parts; the last two of each tuple are never trained on.
OPENERS = (
    "{who} has {a} {item}.",
    "{who} starts with {a} {item}.",
    "{who} owns {a} {item}.",
    "{who} had {a} {item} at first.",
    "In the morning {who} has {a} {item}.",
    "{who} is given {a} {item}.",
    "There are {a} {item} in {who}'s bag.",
    "{who} counts {a} {item}.",
    "At the start, {who} keeps {a} {item}.",
    "{who} begins the day with {a} {item}.",
)
CHANGES = (
    "Then {who} {c1} and {c2}.",
    "First {who} {c1}, then {who} {c2}.",
    "{who} {c1}. After that, {who} {c2}.",
    "Later {who} {c1} and also {c2}.",
    "{who} {c1}. Then {who} {c2}.",
    "On Monday {who} {c1}. On Tuesday {who} {c2}.",
    "{who} {c1}, and after lunch {who} {c2}.",
    "Soon {who} {c1}. Later {who} {c2}.",
    "Next, {who} {c1}; finally, {who} {c2}.",
    "During the week {who} {c1}, and at the weekend {who} {c2}.",
)
QUESTIONS = (
    "How many {item} does {who} have now?",
    "How many {item} does {who} have left?",
    "How many {item} does {who} end up with?",
    "How many {item} are there now?",
    "How many {item} does {who} have in total?",
    "What is the number of {item} {who} has now?",
    "How many {item} remain?",
    "How many {item} are left?",
    "What number of {item} does {who} hold in the end?",
    "Count the {item} {who} has at the end.",
)
# A sentence with no number, put after the opener in some problems: a reader who learned arithmetic ignores it.
DISTRACTORS = (
    "It is a sunny day.", "{who} likes {item}.", "The {item} are small.", "{who} is happy.", "The shop is busy.",
    "{who} has a friend.", "It rains a little.", "The {item} look new.",
    "The sky is grey.", "{who} hums a song.",
)  # fmt: skip
NEW_PARTS = 2  # the last NEW_PARTS entries of OPENERS, CHANGES, QUESTIONS and DISTRACTORS are unseen forms
DISTRACTOR_RATE = 0.3
SIGN_PATTERNS = (("+", "-"), ("-", "+"), ("+", "+"), ("-", "-"))
HELD_OUT_COMBOS_PER_5 = 1  # about 1 in 5 combinations of trained parts is held out as well

# Syllables over the whole alphabet, so that any real name or item splits into pieces the base has seen.
_ONSETS = (
    "",
    *"b c d f g h j k l m n p r s t v w x y z".split(),
    *"ch sh th ph qu st pr tr gr br cr dr fl pl sl sk sn sp sw wh kn".split(),
)  # noqa: E501
_NUCLEI = (*"a e i o u y".split(), *"ai ea ee oo ou ie ia".split())
_CODAS = ("", "", "", *"n r l s t m d ck ng nd st ll x ff sh th".split())


def _pseudo_words(seed: str, count: int, syllables: tuple[int, ...], exclude: set[str]) -> tuple[str, ...]:
    """`count` distinct pronounceable nonsense words, fixed by `seed`."""
    rng, out, seen = random.Random(seed), [], set(exclude)
    while len(out) < count:
        k = rng.choice(syllables)
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS) for _ in range(k))
        if len(word) >= 2 and word not in seen:
            seen.add(word)
            out.append(word)
    return tuple(out)


_TEMPLATE_WORDS = {w.lower() for part in OPENERS + CHANGES + QUESTIONS + DISTRACTORS + PLUS + MINUS
                   for w in re.findall(r"[A-Za-z]+", part)}  # fmt: skip
# Names and items never collide with a real name or item, nor with a word of the sentences ("Then", "Soon").
_REAL = {w.lower() for w in UNSEEN_NAMES} | {w.lower().rstrip("s") for w in UNSEEN_ITEMS} | _TEMPLATE_WORDS | {
    w.lower() for w in UNSEEN_ITEMS}  # fmt: skip
TRAINED_NAMES = tuple(w.capitalize() for w in _pseudo_words("names", 2000, (1, 2, 2), _REAL))
TRAINED_ITEMS = tuple(
    w + "s" for w in _pseudo_words("items", 800, (1, 1, 2), _REAL | {n.lower() for n in TRAINED_NAMES})
)


def _held_out_combo(combo: tuple[int, int, int]) -> bool:
    h = int.from_bytes(hashlib.sha256(repr(combo).encode()).digest()[:4], "big")
    return h % 5 < HELD_OUT_COMBOS_PER_5


_ALL = list(itertools.product(range(len(OPENERS)), range(len(CHANGES)), range(len(QUESTIONS))))
_FIRST_NEW = (len(OPENERS) - NEW_PARTS, len(CHANGES) - NEW_PARTS, len(QUESTIONS) - NEW_PARTS)
_NEW_PART = {c for c in _ALL if any(i >= first for i, first in zip(c, _FIRST_NEW, strict=True))}
TRAINED_COMBOS = tuple(c for c in _ALL if c not in _NEW_PART and not _held_out_combo(c))
UNSEEN_COMBOS = tuple(c for c in _ALL if c not in set(TRAINED_COMBOS))


def draw_terms(rng: random.Random, max_number: int) -> tuple[list[int], list[str]]:
    """A start amount and two changes whose running total never goes below zero (one cannot give away what one
    does not have)."""
    signs = list(rng.choice(SIGN_PATTERNS))
    for _ in range(10_000):  # bounded: "-, -" cannot stay at or above zero with max_number 1
        terms = [rng.randint(1, max_number)]
        value = terms[0]
        for sign in signs:
            terms.append(rng.randint(1, max_number))
            value += terms[-1] if sign == "+" else -terms[-1]
            if value < 0:
                break
        else:
            return terms, signs
    raise UsageError(f"word problems need max_number >= 2 (got {max_number})")


def word_problem(rng: random.Random, max_number: int, unseen: bool) -> tuple[str, list[int], list[str]]:
    """(question, terms, signs) in the trained or the unseen forms."""
    names, items = (UNSEEN_NAMES, UNSEEN_ITEMS) if unseen else (TRAINED_NAMES, TRAINED_ITEMS)
    who, item = rng.choice(names), rng.choice(items)
    o, c, q = rng.choice(UNSEEN_COMBOS if unseen else TRAINED_COMBOS)
    terms, signs = draw_terms(rng, max_number)
    c1, c2 = (rng.choice(PLUS if s == "+" else MINUS).format(n=n) for s, n in zip(signs, terms[1:], strict=True))
    parts = [OPENERS[o], CHANGES[c].format(who="{who}", c1=c1, c2=c2), QUESTIONS[q]]
    if rng.random() < DISTRACTOR_RATE:
        pool = DISTRACTORS[-NEW_PARTS:] if unseen else DISTRACTORS[:-NEW_PARTS]
        parts.insert(rng.choice((1, 2)), rng.choice(pool))
    question = " ".join(part.format(who=who, a=terms[0], item=item) for part in parts)
    return question, terms, signs

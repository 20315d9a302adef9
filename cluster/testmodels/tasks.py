"""The testbed's kinds of request: one generator each, for training and for workloads.

Each generator turns text of a corpus split into an `Example`: a chat conversation or a
completion prompt, and the answer a model should give. The target is trained on examples of
the training split; the benchmarks send prompts made the same way from the held-out split, so
what the served model does with them is what it learned to do, not what it memorised.

The kinds reproduce how real answers relate to their prompts, which decides which
speculation method wins:

- `code_edit` (chat) and `code_edit_completion` (a completion ending in `EDIT_MARKER`): a
  code snippet and an instruction (rename an identifier, add, delete or change a line); the
  answer is the snippet again, edited. Most of the answer copies the prompt: prompt lookup's
  case.
- `summarize`: a document (reference prose or code); the answer quotes its lead sentences and
  one later sentence (prose), or lists its `def`/`class` lines (code): spans of a long context.
- `rag`: three retrieved passages and a question about one of them; the answer quotes the
  passage's definition or sentence.
- `agentic`: a tool loop (read a file, search it, replace lines, run tests) as JSON tool calls
  and observations; a request is the conversation up to one assistant turn. The calls repeat
  one structure across turns and quote the observations.
- `chat`: a question about a topic or a function; the answer is prose the prompt does not
  contain (the reference's text, the function's docstring): model drafts' case.
- `free_form`: a passage of reference prose to continue from its title and first sentences
  (a completion).

Standard library only: this module also runs on the GPU machine that trains the models.
"""

from __future__ import annotations

import ast
import functools
import inspect
import keyword
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from cluster.testmodels.corpus import Corpus, Text, stdlib

EDIT_MARKER = "\n# edited version:\n"
END = "<|end|>"

_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{2,}\b")
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BUILTIN_WORDS = set(keyword.kwlist) | {"self", "cls", "None", "True", "False", "print", "len", "str", "int"}


@dataclass(frozen=True)
class Example:
    kind: str
    answer: str
    messages: tuple[tuple[str, str], ...] = ()  # (role, content); empty for a completion
    prompt: str = ""

    def body(self) -> dict:
        """The OpenAI request body (without model and sampling fields)."""
        if self.messages:
            return {"messages": [{"role": r, "content": c} for r, c in self.messages]}
        return {"prompt": self.prompt}

    def prompt_text(self) -> str:
        """What the model sees: the chat template applied, or the completion prompt."""
        return render_chat(self.messages) if self.messages else self.prompt

    def training_text(self) -> str:
        return self.prompt_text() + self.answer + END + "\n"


def render_chat(messages) -> str:
    """The tokenizer's chat template (`tokenizer.CHAT_TEMPLATE`) with the generation prompt, without jinja."""
    return "".join(f"<|{role}|>\n{content}{END}\n" for role, content in messages) + "<|assistant|>\n"


# --- picking text ---------------------------------------------------------------------------


def _code_chunk(rng: random.Random, code: tuple[Text, ...], min_lines: int, max_lines: int) -> tuple[Text, str]:
    """Consecutive lines, mostly non-blank, the first non-blank and none over 120 characters."""
    while True:
        src = rng.choice(code)
        lines = src.text.splitlines()
        n = rng.randint(min_lines, max_lines)
        if len(lines) <= n * 2:
            continue
        start = rng.randrange(0, len(lines) - n)
        chunk = lines[start : start + n]
        if sum(bool(line.strip()) for line in chunk) >= 0.7 * n and chunk[0].strip() and len(max(chunk, key=len)) < 120:
            return src, "\n".join(chunk)


def _prose_body(topic: Text) -> tuple[str, str]:
    """A reference topic's title and its text without the underline."""
    lines = topic.text.strip().splitlines()
    body = "\n".join(lines[2:] if len(lines) > 2 and set(lines[1]) <= {"*", "=", "-"} else lines[1:]).strip()
    return lines[0].strip(), body


def _prose_chunk(rng: random.Random, prose: tuple[Text, ...], max_chars: int) -> tuple[str, str]:
    """A run of whole paragraphs of a topic, at most about `max_chars`."""
    while True:
        title, body = _prose_body(rng.choice(prose))
        paragraphs = [p for p in body.split("\n\n") if p.strip()]
        if len(paragraphs) < 2:
            continue
        start = rng.randrange(0, max(1, len(paragraphs) - 2))
        out: list[str] = []
        for p in paragraphs[start:]:
            if out and sum(map(len, out)) + len(p) > max_chars:
                break
            out.append(p)
        text = "\n\n".join(out)
        if 200 <= len(text) <= max_chars * 1.5:
            return title, text


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of sentences in `text`, exact, so answers quote the prompt verbatim."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [s for s in spans if s[1] - s[0] > 20]


def _identifiers(code: str) -> list[str]:
    return sorted({w for w in _IDENT.findall(code) if w not in _BUILTIN_WORDS})


def _new_name(rng: random.Random, old: str) -> str:
    return rng.choice(
        [
            f"{old}_v2",
            f"new_{old}",
            f"{old}_value",
            f"{old.rstrip('s')}_items",
            f"_{old}",
            f"{old}2",
            f"my_{old}",
            f"{old}_old",
        ]
    )


# --- code edits -----------------------------------------------------------------------------


def _edit(rng: random.Random, code: str) -> tuple[str, str]:
    """An instruction and the code edited by it."""
    lines = code.splitlines()
    ops = ["rename", "rename", "insert", "delete", "number"]
    while True:
        op = rng.choice(ops)
        if op == "rename" and (names := _identifiers(code)):
            old = rng.choice(names)
            new = _new_name(rng, old)
            edited = re.sub(rf"\b{re.escape(old)}\b", new, code)
            return rng.choice(
                [
                    f"Rename `{old}` to `{new}`.",
                    f"Rename {old} to {new} in this code.",
                    f"Refactor: rename `{old}` to `{new}` everywhere.",
                ]
            ), edited
        candidates = [i for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("#")]
        if op == "insert" and candidates:
            i = rng.choice(candidates)
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            names = _identifiers(lines[i]) or ["this"]
            word = rng.choice(names)
            new_line = indent + rng.choice(
                [f"# TODO: check {word}", f'logger.debug("{word}=%r", {word})', f"assert {word} is not None"]
            )
            edited = "\n".join(lines[: i + 1] + [new_line] + lines[i + 1 :])
            return f"After the line `{lines[i].strip()}`, add `{new_line.strip()}`.", edited
        if op == "delete" and len(candidates) > 3:
            i = rng.choice(candidates)
            return f"Delete the line `{lines[i].strip()}`.", "\n".join(lines[:i] + lines[i + 1 :])
        if op == "number" and (numbers := _NUMBER.findall(code)):
            old = rng.choice(numbers)
            new = str(int(old) + rng.randint(1, 9))
            return f"Change {old} to {new}.", re.sub(rf"(?<![\w.]){old}(?![\w.])", new, code, count=1)


def code_edit(rng: random.Random, corpus: Corpus) -> Example:
    _, code = _code_chunk(rng, corpus.code, 6, 18)
    instruction, edited = _edit(rng, code)
    ask = rng.choice(
        [
            "{i}\n\n```python\n{c}\n```",
            "Edit this code. {i}\n\n```python\n{c}\n```",
            "```python\n{c}\n```\n\n{i} Reply with the whole snippet.",
        ]
    )
    return Example("code_edit", f"```python\n{edited}\n```", messages=(("user", ask.format(i=instruction, c=code)),))


def code_edit_completion(rng: random.Random, corpus: Corpus) -> Example:
    _, code = _code_chunk(rng, corpus.code, 6, 18)
    instruction, edited = _edit(rng, code)
    return Example("code_edit_completion", edited + "\n", prompt=f"# {instruction}\n{code}{EDIT_MARKER}")


# --- quoting a long context -----------------------------------------------------------------


def summarize(rng: random.Random, corpus: Corpus) -> Example:
    if rng.random() < 0.6:
        _, doc = _prose_chunk(rng, corpus.prose, 1500)
        spans = _sentences(doc)
        lead = doc[spans[0][0] : spans[min(2, len(spans) - 1)][1]]
        later = [doc[a:b] for a, b in spans[3:]]
        answer = lead + ("\n" + rng.choice(later) if later else "")
        ask = rng.choice(
            ["Summarize this document:\n\n{d}", "{d}\n\nTL;DR:", "Give the key points of this text.\n\n{d}"]
        )
    else:
        _, doc = _code_chunk(rng, corpus.code, 30, 60)
        defs = [line.strip() for line in doc.splitlines() if line.lstrip().startswith(("def ", "class ", "async def "))]
        answer = "It defines:\n" + "\n".join(defs[:10]) if defs else "It contains:\n" + "\n".join(doc.splitlines()[:3])
        ask = rng.choice(
            ["Summarize this code:\n\n```python\n{d}\n```", "Give the key points of this module part:\n\n{d}"]
        )
    return Example("summarize", answer, messages=(("user", ask.format(d=doc)),))


def _definitions(code: str) -> list[tuple[str, str]]:
    """(name, first lines of its definition) for each def/class in `code`."""
    lines = code.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*(?:async\s+)?(?:def|class)\s+(\w+)", line)
        if m:
            out.append((m.group(1), "\n".join(lines[i : i + 6])))
    return out


def rag(rng: random.Random, corpus: Corpus) -> Example:
    if rng.random() < 0.5:
        passages = [_code_chunk(rng, corpus.code, 12, 24) for _ in range(3)]
        texts = [f"{src.name}:\n{code}" for src, code in passages]
        pick = [i for i, (_, code) in enumerate(passages) if _definitions(code)]
        if not pick:
            return rag(rng, corpus)
        i = rng.choice(pick)
        name, definition = rng.choice(_definitions(passages[i][1]))
        question = f"Show the definition of `{name}` from the passages."
        answer = f"From [{i + 1}]:\n{definition}"
    else:
        chunks = [_prose_chunk(rng, corpus.prose, 700) for _ in range(3)]
        texts = [f"{title}:\n{text}" for title, text in chunks]
        i = rng.randrange(3)
        spans = _sentences(chunks[i][1])
        j = rng.randrange(len(spans))
        quote = chunks[i][1][spans[j][0] : spans[min(j + 1, len(spans) - 1)][1]]
        words = [w for w in _IDENT.findall(quote) if len(w) > 4 and w.lower() not in _BUILTIN_WORDS] or ["this"]
        question = f"According to the passages, what about {rng.choice(words)}?"
        answer = f"[{i + 1}] says: {quote}"
    context = "\n\n".join(f"[{n + 1}] {t}" for n, t in enumerate(texts))
    return Example("rag", answer, messages=(("user", f"Passages:\n\n{context}\n\nQuestion: {question}"),))


# --- tool loops -----------------------------------------------------------------------------

AGENT_SYSTEM = (
    "You are a coding agent. Reply with one tool call per turn as JSON: "
    '{"tool": NAME, "args": {...}}. Tools: read_file(path), search(path, pattern), '
    "replace(path, old, new), run_tests(path). When done, reply in plain text."
)


def _agent_turns(rng: random.Random, corpus: Corpus) -> list[tuple[str, str]]:
    names: list[str] = []
    while not names:
        src, code = _code_chunk(rng, corpus.code, 8, 16)
        names = [n for n in _identifiers(code) if len(re.findall(rf"\b{n}\b", code)) >= 2] or _identifiers(code)
    old = rng.choice(names)
    new = _new_name(rng, old)
    path = src.name

    def call(tool: str, **args) -> str:
        inner = ", ".join(f'"{k}": "{v}"' for k, v in args.items())
        return f'{{"tool": "{tool}", "args": {{{inner}}}}}'

    hits = [(n + 1, line) for n, line in enumerate(code.splitlines()) if re.search(rf"\b{old}\b", line)]
    turns = [
        ("system", AGENT_SYSTEM),
        ("user", f"In {path}, rename `{old}` to `{new}`, then run the tests."),
        ("assistant", call("read_file", path=path)),
        ("user", f"Observation:\n{code}"),
        ("assistant", call("search", path=path, pattern=old)),
        ("user", "Observation:\n" + "\n".join(f"{path}:{n}: {line.strip()}" for n, line in hits)),
    ]
    for _, line in hits[:4]:
        edited = re.sub(rf"\b{old}\b", new, line.strip())
        turns += [
            ("assistant", call("replace", path=path, old=line.strip().replace('"', "'"), new=edited.replace('"', "'"))),
            ("user", "Observation:\nreplaced 1 line"),
        ]
    passed = rng.randint(3, 40)
    turns += [
        ("assistant", call("run_tests", path=path)),
        ("user", f"Observation:\n{passed} passed"),
        ("assistant", f"Renamed `{old}` to `{new}` in {path} ({len(hits)} lines); {passed} tests pass."),
    ]
    return turns


def agentic(rng: random.Random, corpus: Corpus) -> Example:
    """The loop up to one of its assistant turns (a later turn more often than an early one)."""
    turns = _agent_turns(rng, corpus)
    assistant_at = [i for i, (role, _) in enumerate(turns) if role == "assistant"]
    cut = assistant_at[min(len(assistant_at) - 1, int(len(assistant_at) * rng.random() ** 0.5))]
    return Example("agentic", turns[cut][1], messages=tuple(turns[:cut]))


# --- free text ------------------------------------------------------------------------------


@functools.cache
def _docstrings(code: str) -> list[tuple[str, str]]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc and len(doc) > 80:
                out.append((node.name, inspect.cleandoc(doc)))
    return out


def chat(rng: random.Random, corpus: Corpus) -> Example:
    if rng.random() < 0.5:
        while True:
            title, body = _prose_body(rng.choice(corpus.prose))
            paragraphs = [p for p in body.split("\n\n") if p.strip() and not p.startswith("   ")]
            if paragraphs:
                break
        answer = "\n\n".join(paragraphs[:2])[:900]
        ask = rng.choice(["What is {t}?", "Explain {t}.", "Tell me about {t}.", "How does {t} work in Python?"])
        return Example("chat", answer, messages=(("user", ask.format(t=title)),))
    while True:
        src = rng.choice(corpus.code)
        docs = _docstrings(src.text)
        if docs:
            break
    name, doc = rng.choice(docs)
    module = src.name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    ask = rng.choice(["What does `{n}` in {m} do?", "Explain {m}.{n}.", "What is {n} for (module {m})?"])
    return Example("chat", doc[:900], messages=(("user", ask.format(n=name, m=module)),))


def free_form(rng: random.Random, corpus: Corpus) -> Example:
    """A passage of reference prose to continue from its title and first sentences.

    Prose, not code: continuing code, the 4-layer target fell into repeating itself (prompt
    lookup accepted 0.48, the draft 0.30), which real models rarely do in a hundred tokens. On
    prose both models recite text they learnt (the draft accepts 1.0, prompt lookup 0.29): the
    direction real pairs show, at a higher rate than theirs (0.6-0.8)."""
    while True:
        title, text = _prose_chunk(rng, corpus.prose, 900)
        spans = _sentences(text)
        if len(spans) >= 3:
            break
    cut = spans[rng.randint(0, min(2, len(spans) - 2))][1]
    return Example("free_form", text[cut:], prompt=f"{title}\n\n{text[:cut]}")


GENERATORS: dict[str, Callable[[random.Random, Corpus], Example]] = {
    "code_edit": code_edit,
    "code_edit_completion": code_edit_completion,
    "summarize": summarize,
    "rag": rag,
    "agentic": agentic,
    "chat": chat,
    "free_form": free_form,
}


def examples(kind: str, corpus: Corpus, count: int, seed: int) -> list[Example]:
    rng = random.Random(f"{kind}:{seed}")
    return [GENERATORS[kind](rng, corpus) for _ in range(count)]


# Kinds whose answers the model writes from what it knows rather than copies. A real model is
# asked in chat about things it learnt; on held-out topics this 4-layer target writes word salad
# that no draft predicts (vLLM: draft acceptance 0.13 on held-out chat, 0.50 simulated on chat
# about the training split), which real models do not. The kinds that test copying stay
# held out, so copying there cannot be recall.
KNOWN_TEXT_KINDS = ("chat", "free_form")


def held_out_for(kind: str) -> bool:
    return kind not in KNOWN_TEXT_KINDS


def served(kind: str, count: int, seed: int) -> list[Example]:
    """Examples as the benchmarks and the build send them: from the split `held_out_for` says."""
    return examples(kind, stdlib(held_out=held_out_for(kind)), count, seed)

"""Put a request in a request class from cheap features of its body.

An explicit class (header `x-request-class`) always wins; this is the fallback. The rules
are ordered from the most to the least specific signal and only name classes the config
declares; anything else lands in the router's default class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

CODE_LINE = re.compile(
    r"^(\s*(def |class |import |from \S+ import|return\b|#include|function |const |let |public )"
    r"|\s{2,}\S|.*[:;{}(\[,]\s*$|.*\w\(.*\))"
)
EDIT_WORDS = re.compile(r"\b(edit|rewrite|refactor|fix|rename|modify|change|update|patch)\b|# edited version", re.I)
SUMMARY_WORDS = re.compile(r"\b(summari[sz]e|summary|tl;?dr|key points|according to the (context|document))\b", re.I)
LONG_PROMPT_CHARS = 2000
# The classes `classify` can put a request in; a config's other classes need the header.
RECOGNISED_CLASSES = ("agentic", "bulk", "code_edit", "summarize")


@dataclass(frozen=True)
class RequestFeatures:
    prompt_chars: int
    code_lines: int
    edit_words: bool
    summary_words: bool
    has_tools: bool
    n: int
    temperature: float | None

    text_lines: int

    @property
    def looks_like_code(self) -> bool:
        return self.code_lines >= 2 and self.code_lines * 2 >= self.text_lines


def prompt_text(body) -> str:
    messages = getattr(body, "messages", None)
    if messages is not None:
        parts = []
        for i, m in enumerate(messages):
            content = m.get("content") if isinstance(m, dict) else getattr(m, "content", None)
            if content is not None and not isinstance(content, (str, list)) and isinstance(m, dict):
                # Parts that fail vLLM's list validation stay pydantic's one-shot iterator, checked
                # as it is read: read it once (keeping what it held for the engine) and call a bad
                # part the client's error. Joining the iterator itself was a 500 (found by fuzzing).
                try:
                    content = m["content"] = list(content)
                except ValidationError as e:
                    raise ValueError(f"messages[{i}].content: {e.errors()[0]['msg']}") from None
            if isinstance(content, list):  # content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(content if isinstance(content, str) else "")
        return "\n".join(parts)
    prompt = getattr(body, "prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(p for p in prompt if isinstance(p, str))


def features(body) -> RequestFeatures:
    text = prompt_text(body)
    lines = [line for line in text.splitlines() if line.strip()]
    return RequestFeatures(
        prompt_chars=len(text),
        code_lines=sum(bool(CODE_LINE.match(line)) for line in lines),
        text_lines=len(lines),
        edit_words=bool(EDIT_WORDS.search(text)),
        summary_words=bool(SUMMARY_WORDS.search(text)),
        has_tools=bool(getattr(body, "tools", None)),
        n=getattr(body, "n", None) or 1,
        temperature=getattr(body, "temperature", None),
    )


def classify(f: RequestFeatures, classes: set[str], default: str) -> str:
    rules = [
        ("agentic", f.has_tools),
        # Several samples, or sampling hot enough that drafts are rarely accepted.
        ("bulk", f.n > 1 or (f.temperature or 0) > 1.0),
        ("code_edit", f.looks_like_code and f.edit_words),
        ("summarize", f.summary_words or (f.prompt_chars >= LONG_PROMPT_CHARS and not f.looks_like_code)),
        ("code_edit", f.looks_like_code),
    ]
    return next((name for name, matches in rules if matches and name in classes), default)

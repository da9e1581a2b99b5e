"""Splitting the agent's streamed reply into `reasoning_content` and `content`, as the server sends it."""

from __future__ import annotations

from agentkit.reasoning.citations import _ANSWER, _REASONING

_MARKS = ("answer:", "answer**:")
_OPENINGS = ("reasoning:", "reasoning**:", "question:", "question**:")
#: The quote reader's reply (reasoning/prompts/grounded.yaml): `Quote: [n] "…"` then `Answer: …`.
_QUOTED = ("quote:", "quote**:")


def _bare(line: str) -> str:
    return line.lstrip().lstrip("*").lower()


class ReplySplitter:
    """Splits the agent's streamed reply the way `parse_reply` splits the whole one.

    A reply that opens with "Reasoning:" streams as `reasoning_content` (the field vLLM and
    DeepSeek use) until its "Answer:" line; the answer streams as `content`. A line is held back
    only while it could still become that mark.

    The quote reader's reply ("Quote: …" then "Answer: …") streams whole as `reasoning_content`
    (`answered` stays False): its answer is text agentkit composes from the quote, which the agent
    streams apart from the reply, as ContentEvents.
    """

    def __init__(self) -> None:
        self.mode = "start"  # start -> reasoning | answer | quoted
        self._line = ""  # the current, unfinished line (reasoning mode)
        self._sent = 0  # how much of it has gone out
        self._skip_space = False

    @property
    def answered(self) -> bool:
        """True once the answer part has begun (else the final text must be sent at the end)."""
        return self.mode == "answer"

    def feed(self, text: str) -> list[tuple[str, str]]:
        if self.mode == "answer":
            return self._content(text)
        if self.mode == "quoted":
            return [("reasoning_content", text)] if text else []
        if self.mode == "start":
            self._line += text
            head = _bare(self._line)
            if any(head.startswith(o) for o in _QUOTED):
                held, self._line, self.mode = self._line, "", "quoted"
                return [("reasoning_content", held)]
            mark = _ANSWER.match(self._line)
            if mark is not None:
                if mark.end() == len(self._line):
                    return []  # "Answer: " may still grow "**" or spaces: wait for the text
                rest, self._line = self._line[mark.end() :], ""
                self.mode, self._skip_space = "answer", True
                return self._content(rest)
            if any(head.startswith(o) for o in _OPENINGS):
                label = _REASONING.match(self._line)
                if label is not None and label.end() == len(self._line):
                    return []  # "Reasoning:" may still grow "**" or spaces: wait for the text
                held = self._line[label.end() :] if label is not None else self._line
                self._line, self.mode = "", "reasoning"
                return self._reasoning(held)
            if head and not any(o.startswith(head) for o in (*_OPENINGS, *_MARKS, *_QUOTED)):
                held, self._line = self._line, ""
                self.mode = "answer"
                return self._content(held)
            return []
        return self._reasoning(text)

    def finish(self) -> list[tuple[str, str]]:
        """Whatever is still held back."""
        if _ANSWER.match(self._line):
            self.mode, self._line = "answer", ""  # an answer mark with nothing after it
            return []
        held, self._line = self._line[self._sent :], ""
        if not held:
            return []
        return [("content" if self.mode == "start" else "reasoning_content", held)]

    def _reasoning(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        *complete, self._line = (self._line + text).split("\n")
        lines = [*complete, self._line]
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            mark = _ANSWER.match(line)
            # A mark at the very end may still grow ("**Answer:" + "**"): wait for what follows.
            if mark is not None and (not last or mark.end() < len(line)):
                # The answer begins: the rest of this line and everything after it is content.
                rest = "\n".join([line[mark.end() :], *lines[i + 1 :]])
                self._line, self._sent = "", 0
                self.mode, self._skip_space = "answer", True
                return out + self._content(rest)
            if not last:
                out.append(("reasoning_content", line[self._sent :] + "\n"))
                self._sent = 0
            elif mark is None and not any(m.startswith(_bare(line)) for m in _MARKS) and line[self._sent :]:
                out.append(("reasoning_content", line[self._sent :]))
                self._sent = len(line)
        return _merge(out)

    def _content(self, text: str) -> list[tuple[str, str]]:
        if self._skip_space:
            text = text.lstrip()
            self._skip_space = not text
        return [("content", text)] if text else []


def _merge(pieces: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for kind, text in pieces:
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        elif text:
            out.append((kind, text))
    return out

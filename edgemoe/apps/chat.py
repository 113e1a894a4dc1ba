"""`edgemoe chat`: an interactive terminal chat, or one turn per line when stdin is a pipe."""
from __future__ import annotations

import json
import sys
from typing import Optional, TextIO

from ..api import ContextLengthError
from ..errors import EdgeMoEError
from ..generate import CONTEXT
from ..session import ChatSession

HELP = """commands:
  /image PATH  attach an image to your next message (a model that takes images)
  /reset   forget the conversation (keeps the system prompt)
  /stats   speed of the last reply, where its time went, expert cache and memory (/stats json: raw)
  /help    this text
  /quit    leave (Ctrl-D too); Ctrl-C stops a reply without leaving"""


def format_stats(session: ChatSession, raw: bool = False) -> str:
    """The last reply's figures for a person (timings.py), or with raw=True the counters as JSON."""
    model, last = session.model, session.last
    if raw:
        return json.dumps(dict(model.stats(), context_tokens=model.n_past, prefill=last.prefill_engine,
                               decode=last.decode_engine, draft=last.draft, memory_plan_bytes=model.plan.total_bytes))
    from .timings import timing_lines

    return "\n".join(timing_lines(last, model) + [f"{'context':<8} {model.n_past} of {model.ctx_size} tokens"])


class ChatREPL:
    def __init__(self, session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr, interactive: Optional[bool] = None):
        self.session = session
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.interactive = stdin.isatty() if interactive is None else interactive
        self.images: list = []  # encoded by /image, sent with the next message

    def _say(self, text: str) -> None:
        # Notices go to the terminal in a chat, to stderr when scripted, so stdout carries replies only.
        (self.stdout if self.interactive else self.stderr).write(text + "\n")
        (self.stdout if self.interactive else self.stderr).flush()

    def _read(self) -> Optional[str]:
        if self.interactive:
            try:
                return input(">>> ")
            except EOFError:
                self.stdout.write("\n")
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def _command(self, line: str) -> bool:
        """Handle a /command; returns False to quit."""
        cmd = line.strip().split()[0].lower()
        if cmd in ("/quit", "/exit", "/bye"):
            return False
        if cmd == "/image":
            self._attach(line.strip()[len(cmd):].strip().strip("\"'"))
        elif cmd == "/reset":
            self.session.reset()
            self.images = []
            self._say("[conversation cleared]")
        elif cmd == "/stats":
            self._say(format_stats(self.session, raw=line.split()[1:] == ["json"]))
        elif cmd in ("/help", "/?"):
            self._say(HELP)
        else:
            self._say(f"unknown command {cmd}; /help lists them")
        return True

    def _attach(self, path: str) -> None:
        if not path:
            self._say("usage: /image PATH")
            return
        try:  # encoded now: a bad file is reported before the message is written
            image = self.session.model.encode_image(path)
        except EdgeMoEError as e:
            self._say(f"[error: {e}]")
            return
        self.images.append(image)
        self._say(f"[image attached: {image.n_tokens} tokens; it goes with your next message]")

    def _turn(self, text: str) -> None:
        dropped = self.session.dropped_turns
        images, self.images = self.images, []
        try:
            pieces = self.session.send(text, images=images)
        except ContextLengthError as e:
            self._say(f"[{e}]")
            return
        try:
            for piece in pieces:
                self.stdout.write(piece)
                self.stdout.flush()
        except KeyboardInterrupt:
            pieces.close()
            self.stdout.write("\n")
            self._say("[reply stopped]")
            return
        self.stdout.write("\n")
        self.stdout.flush()
        if self.session.last.stop_reason == CONTEXT:
            self._say("[context full: the reply was cut; older turns will be dropped to continue]")
        if self.session.dropped_turns > dropped:
            self._say(f"[context full: dropped the {self.session.dropped_turns - dropped} oldest message(s)]")

    def run(self) -> int:
        if self.interactive:
            self._say("edgemoe chat - /help for commands, Ctrl-D to leave")
        while True:
            try:
                line = self._read()
            except KeyboardInterrupt:  # Ctrl-C at the prompt: clear the line, stay
                self.stdout.write("\n")
                continue
            if line is None:
                return 0
            if not line.strip():
                continue
            if line.lstrip().startswith("/"):
                if not self._command(line):
                    return 0
                continue
            try:
                self._turn(line)
            except KeyboardInterrupt:
                self.stdout.write("\n")
                self._say("[reply stopped]")
            except EdgeMoEError as e:
                self._say(f"[error: {e}]")

"""`edgemoe chat`: an interactive terminal chat, or one turn per line when stdin is a pipe."""
from __future__ import annotations

import resource
import sys
from typing import Optional, TextIO

from ..api import ContextLengthError
from ..errors import EdgeMoEError
from ..generate import CONTEXT
from ..session import ChatSession

HELP = """commands:
  /reset   forget the conversation (keeps the system prompt)
  /stats   speed of the last reply, expert cache and memory figures
  /help    this text
  /quit    leave (Ctrl-D too); Ctrl-C stops a reply without leaving"""


def format_stats(session: ChatSession) -> str:
    import psutil

    s, last = session.model.stats(), session.last
    rss = psutil.Process().memory_info().rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    figures = {
        "prefill_tok_s": round(last.prefill_tok_s, 2),
        "decode_tok_s": round(last.decode_tok_s, 2),
        "last_reply_tokens": last.generated_tokens,
        "context_tokens": session.model.n_past,
        "cache_hit_rate": round(s["cache_hit_rate"], 4),
        "cache_hits": s["cache_hits"],
        "cache_misses": s["cache_misses"],
        "mb_read": round(s["bytes_read"] / 1e6, 2),
        "io_wait_s": round(s["io_wait_s"], 3),
        "prefetch_hits": s["prefetch_hits"],
        "prefetch_wasted": s["prefetch_wasted"],
        "rss_mb": round(rss / 1e6, 1),
        "peak_rss_mb": round(peak / 1e6, 1),
        "memory_plan_mb": round(session.model.plan.total_bytes / 1e6, 1),
    }
    return "\n".join(f"  {k:<18} {v}" for k, v in figures.items())


class ChatREPL:
    def __init__(self, session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr, interactive: Optional[bool] = None):
        self.session = session
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.interactive = stdin.isatty() if interactive is None else interactive

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
        if cmd == "/reset":
            self.session.reset()
            self._say("[conversation cleared]")
        elif cmd == "/stats":
            self._say(format_stats(self.session))
        elif cmd in ("/help", "/?"):
            self._say(HELP)
        else:
            self._say(f"unknown command {cmd}; /help lists them")
        return True

    def _turn(self, text: str) -> None:
        dropped = self.session.dropped_turns
        try:
            pieces = self.session.send(text)
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

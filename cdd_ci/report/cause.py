"""The line or few lines of a failed step's output that explain it.

Vagrant ends every failed provisioner with the same paragraph ("The SSH command responded with
a non-zero exit status...") and prefixes every line with the machine's name, so its last line
says nothing about why. A person reading the log looks for the lines below instead: apt's `E:`
lines, a shell's `command not found`, curl's error, a traceback's last line, a unit that did not
start. This module does that reading, so the JUnit message, the summary line and the issue's
"What failed" lead with the cause; the whole output stays in the step's details.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINES = 3
"""apt says one thing in two or three `E:` lines; more than that is a log, not a cause."""
MAX_CHARS = 300

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# "==> alpha: Running provisioner" is Vagrant's own voice; "    alpha: E: ..." is the guest's.
_VAGRANT_SAYS = re.compile(r"^==> [\w.-]+: ?")
_GUEST_SAYS = re.compile(r"^ {4}[\w.-]+: ?")
_RUBY_FRAME = re.compile(r"^\s*(?:from )?/\S+\.rb:\d+")  # Vagrant's own backtrace

# Vagrant's paragraphs that follow a failure whatever the failure was (its en.yml wording).
_BOILERPLATE = [
    re.compile(r"\s+".join(re.escape(w) for w in text.split()))
    for text in (
        "The SSH command responded with a non-zero exit status. Vagrant assumes that this "
        "means the command failed. The output for this command should be in the log above. "
        "Please read the output to determine what went wrong.",
        "For more information on the failure, enable detailed logging by setting the "
        "environment variable VAGRANT_LOG to DEBUG.",
        "The following SSH command responded with a non-zero exit status. Vagrant assumes "
        "that this means the command failed!",
        # one `vagrant up` of several machines, as one of them fails
        "An error occurred. The error will be shown after all tasks complete.",
    )
] + [
    # a trigger's script that failed: what it printed before says why
    re.compile(r"A script exited with an unacceptable exit code \d+\."),
]

# Lines that name a cause, whatever printed them. Checked on every line; the last one wins.
_CAUSES = re.compile(
    r"^E: "                                           # apt, dpkg
    r"|^(?:curl|wget): "                              # curl: (6) Could not resolve host
    r"|^ERROR \d{3}: |unable to resolve host address|Name or service not known"
    r"|Temporary failure in name resolution|Could not resolve host"
    r"|: command not found$|: not found$"             # bash, dash
    r"|No such file or directory|Permission denied|Connection refused|No route to host"
    r"|^Job for \S+ failed|^Failed to (?:start|enable|restart|reload) "  # systemctl
    r"|^(?:FATAL|fatal|ERROR|Error|error)(?:\[\w+\])?:"
    r"|^FAILED!? "                                    # ansible
)
_TRACEBACK = "Traceback (most recent call last):"
_XTRACE = re.compile(r"^\++ (.+)")                  # `set -x`: the command about to run
_HINTS = re.compile(r"\b(?:error|failed|fatal|cannot|could not|timed out)\b", re.IGNORECASE)
_PROGRESS = re.compile(
    r"^(?:Running provisioner: |Running: (?:inline script|/tmp/vagrant-shell)|Bringing machine"
    r" |Machine booted and ready|Checking for guest additions|Setting hostname|Configuring "
    r"and enabling network|Importing base box|Waiting for machine to boot"
    r"|Running action triggers |Running trigger: |Running local: |Trigger run failed$)")


@dataclass(frozen=True)
class Line:
    text: str
    guest: bool
    """Printed by the guest (a provisioner's own output), not by Vagrant."""
    progress: bool = False
    """One of Vagrant's "==> machine:" lines: what it was doing, never why it failed."""


def lines_of(output: str) -> list[Line]:
    """The output as a person reads it: no colour codes, no machine prefixes, no boilerplate,
    no Ruby backtrace lines."""
    text = _ANSI.sub("", output).replace("\r\n", "\n")
    for pattern in _BOILERPLATE:
        text = pattern.sub("", text)
    lines: list[Line] = []
    for raw in text.split("\n"):
        raw = raw.rstrip()
        guest = bool(_GUEST_SAYS.match(raw))
        progress = bool(_VAGRANT_SAYS.match(raw))
        body = _GUEST_SAYS.sub("", raw) if guest else _VAGRANT_SAYS.sub("", raw)
        if not body.strip() or (not guest and _RUBY_FRAME.match(raw)):
            lines.append(Line("", guest))  # a paragraph break, kept for Vagrant's own errors
            continue
        lines.append(Line(body, guest, progress))
    return lines


def explain(output: str) -> str:
    """The cause in one line ("" if the output says nothing at all)."""
    lines = lines_of(output)
    texts = [ln.text.strip() for ln in lines]
    best = _last_cause(texts)
    if best is not None:
        return _clip(best)
    vagrant_error = _last_vagrant_paragraph(lines)
    if vagrant_error:
        return _clip(vagrant_error)
    hinted = [t for t in texts if t and _HINTS.search(t) and not _PROGRESS.match(t)]
    if hinted:
        return _clip(hinted[-1])
    meaningful = [t for t in texts if t and not _PROGRESS.match(t)]
    return _clip(meaningful[-1]) if meaningful else ""


def running(output: str) -> str:
    """What a step was doing when it was stopped: its last command traced, else its last
    line of output ("" if none)."""
    texts = [ln.text.strip() for ln in lines_of(output)]
    meaningful = [t for t in texts if t and not _PROGRESS.match(t)]
    if not meaningful:
        return ""
    last = meaningful[-1]
    traced = _XTRACE.match(last)
    return _clip(traced.group(1) if traced else last)


def _last_cause(texts: list[str]) -> str | None:
    """The last piece of evidence: a cause line (with the ones just before it that say the
    same kind of thing), a traceback's last line, or a traced command nothing came after
    (the one `set -e` stopped at, since bash says nothing itself)."""
    tb_end = _traceback_end(texts)
    last_output = ""
    for i in range(len(texts) - 1, -1, -1):
        text = texts[i]
        if not text:
            continue
        if i == tb_end:
            return text
        if _CAUSES.search(text):
            block = [text]
            j = i - 1
            # apt's "E:" lines go together; lines from different tools are different stories
            while j >= 0 and len(block) < MAX_LINES and texts[j] and _CAUSES.search(texts[j]) \
                    and _speaker(texts[j]) == _speaker(text):
                if texts[j] not in block:
                    block.insert(0, texts[j])
                j -= 1
            cause = " / ".join(block)
            if j >= 0 and (traced := _XTRACE.match(texts[j])):
                cause += f" (running: {traced.group(1)})"
            return cause
        if traced := _XTRACE.match(text):
            # under `set -e` the last command traced is the one that stopped the script
            if last_output:
                return f"{last_output} (running: {traced.group(1)})"
            return f"command failed: {traced.group(1)}"
        if not last_output and not _PROGRESS.match(text):
            last_output = text
    return None


def _speaker(text: str) -> str:
    """Who printed a line, as far as it says: "E" for apt, "curl", "/tmp/vagrant-shell"."""
    return text.split(":", 1)[0] if ":" in text else ""


def _traceback_end(texts: list[str]) -> int:
    """Index of the exception line of the last Python traceback (-1 if none): the first line
    after the header that is not an indented frame."""
    starts = [i for i, t in enumerate(texts) if t == _TRACEBACK]
    if not starts:
        return -1
    for i in range(starts[-1] + 1, len(texts)):
        if texts[i] and not texts[i].startswith(("File ", "^", "~")) \
                and not _is_frame_code(texts, i):
            return i
    return -1


def _is_frame_code(texts: list[str], i: int) -> bool:
    # the source line shown under `File "...", line N, in f` belongs to that frame
    return i > 0 and texts[i - 1].startswith("File ")


def _last_vagrant_paragraph(lines: list[Line]) -> str:
    """Vagrant's own error (an `up` that failed before any provisioner ran): its last
    paragraph, which is where it puts the specific part."""
    paragraph: list[str] = []
    for line in reversed(lines):
        if line.guest or line.progress:
            break
        if not line.text.strip():
            if paragraph:
                break
            continue
        if _PROGRESS.match(line.text.strip()):
            break
        paragraph.insert(0, line.text.strip())
    return " ".join(paragraph)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"

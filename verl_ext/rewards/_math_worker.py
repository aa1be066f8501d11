"""math-verify equality, and the worker process of ``verl_ext.rewards.math.MathVerifyPool``.

Standalone on purpose (imports only math-verify): the pool starts it as a script with
``python -I <this file>``, so a worker does not import ``verl_ext`` (whose package import
registers plug-ins with verl and loads torch). As a worker it reads one JSON list of
``[target, pred, timeout_s]`` per stdin line and answers one JSON list of booleans per stdout
line. Comparisons run in the worker's main thread, so math-verify's ``signal.alarm`` timeouts
are active.
"""

from __future__ import annotations

import json
import logging
import os
import sys

LOG_MESSAGE_CHARS = 200  # math-verify logs its whole input on a timeout (a response: up to 20k characters)


class _ShortMessages(logging.Filter):
    """Cuts a log record's message to ``LOG_MESSAGE_CHARS`` characters (plus a count of the rest)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if len(msg) > LOG_MESSAGE_CHARS:
            record.msg = f"{msg[:LOG_MESSAGE_CHARS]}... [{len(msg) - LOG_MESSAGE_CHARS} more characters]"
            record.args = ()
        return True


for _name in ("math_verify.parser", "math_verify.grader", "math_verify.metric"):
    logging.getLogger(_name).addFilter(_ShortMessages())


def math_verify_equal(gold: str, pred: str, timeout_s: int | None) -> bool:
    """math-verify equality of two answer strings, each parsed as ``\\boxed{…}``.

    ``timeout_s`` bounds each parse / comparison (math-verify's ``signal.alarm``: main thread
    only); ``None`` disables it.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = (LatexExtractionConfig(), ExprExtractionConfig())
    g = parse(f"\\boxed{{{gold.strip().strip('$')}}}", extraction_config=config, parsing_timeout=timeout_s)
    if not g:
        return False
    p = parse(f"\\boxed{{{pred.strip().strip('$')}}}", extraction_config=config, parsing_timeout=timeout_s)
    if not p:
        return False
    return bool(verify(g, p, timeout_seconds=timeout_s))


def main() -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the reward records failures itself
    import math_verify  # noqa: F401  (import before "ready": start-up is not part of a call's budget)

    out.write("ready\n")
    for line in sys.stdin:
        tasks = json.loads(line)
        out.write(json.dumps([math_verify_equal(t, p, int(s)) for t, p, s in tasks]) + "\n")


if __name__ == "__main__":
    main()

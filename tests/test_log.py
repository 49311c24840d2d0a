"""ProxyLog: the proxy's own log lines, written without the logging machinery once main() set it up.

The lines must read exactly as the standard Formatter wrote them before (text) or as JsonFormatter
does (json): same time format, level names, message, fields, tracebacks."""

from __future__ import annotations

import json
import logging
import os
import re
import time

import ollama_proxy as op


def read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def pipe_log(level: int = logging.INFO, json_lines: bool = False):
    r, w = os.pipe()
    plog = op.ProxyLog("ollama_proxy_test_%d" % w)
    plog.write_to(w, level, json_lines)
    return plog, r, w


def test_text_lines_read_as_the_standard_formatter_wrote_them():
    plog, r, w = pipe_log()
    before = time.time()
    plog.info("conn %d: %s %s", 3, "POST", "/api/chat")
    plog.warning("plain text, no args: 100%")
    plog.debug("not at info")
    lines = read_all(r).splitlines()
    assert len(lines) == 2
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO conn 3: POST /api/chat", lines[0])
    assert m, lines[0]
    stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
    assert before - 1 <= stamp <= time.time() + 1  # local time, as logging's asctime
    assert lines[1].endswith(" WARNING plain text, no args: 100%")
    # the same record through logging.Formatter("%(asctime)s %(levelname)s %(message)s"):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "conn %d: %s %s", (3, "POST", "/api/chat"), None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO conn 3: POST /api/chat",
                        logging.Formatter("%(asctime)s %(levelname)s %(message)s").format(record))
    os.close(r)
    os.close(w)


def test_json_lines_carry_the_fields_and_a_traceback():
    plog, r, w = pipe_log(logging.DEBUG, json_lines=True)
    plog.info("conn %d: GET /", 1, extra={"fields": {"event": "request", "status": 200}})
    try:
        raise ValueError("boom")
    except ValueError:
        plog.exception("conn %d: unexpected error", 2)
    first, second = [json.loads(line) for line in read_all(r).splitlines()]
    assert first["level"] == "info" and first["message"] == "conn 1: GET /" and first["event"] == "request" and first["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "error" and "ValueError: boom" in second["traceback"]
    os.close(r)
    os.close(w)


def test_levels_bad_formats_and_a_closed_stream_cost_nothing():
    plog, r, w = pipe_log(logging.WARNING)
    assert not plog.isEnabledFor(logging.INFO) and plog.isEnabledFor(logging.ERROR)
    plog.info("hidden")
    plog.log(logging.WARNING, "two %s %s", "only one")  # a bad format is logged, not raised
    text = read_all(r)
    assert "hidden" not in text and "log format error" in text
    os.close(r)
    plog.error("into a broken pipe")  # EPIPE is swallowed
    os.close(w)
    plog.error("into a closed descriptor")  # EBADF too


def test_before_write_to_the_standard_logger_gets_the_records(caplog):
    plog = op.ProxyLog("ollama_proxy_test_std")
    with caplog.at_level(logging.INFO, logger="ollama_proxy_test_std"):
        plog.info("hello %s", "there", extra={"fields": {"event": "x"}})
    assert [(r.getMessage(), r.fields) for r in caplog.records] == [("hello there", {"event": "x"})]
    assert caplog.records[0].filename == "test_log.py"  # stacklevel: the caller, not ProxyLog

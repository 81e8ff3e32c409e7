"""JSON log lines on stderr, in the C SDK's format (driver-sdk/src/log.c):
{"ts":…,"level":…,"driver":…,"method":…,"msg":…} plus the caller's fields.
The host reads them as the driver's log; never pass secrets."""

import datetime
import json
import os
import sys
import threading

__all__ = ["Logger", "log"]

_LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
_lock = threading.Lock()
_state = {"driver": "driver", "min": _LEVELS.get(os.environ.get("DROVER_LOG_LEVEL", "info"), 1)}


def set_driver(name):
    _state["driver"] = name
    _state["min"] = _LEVELS.get(os.environ.get("DROVER_LOG_LEVEL", "info"), 1)


def log(level, msg, method=None, **fields):
    """Writes one JSON line on stderr (level: debug, info, warn, error)."""
    if _LEVELS.get(level, 3) < _state["min"]:
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    line = {"ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000), "level": level,
            "driver": _state["driver"]}
    if method:
        line["method"] = method
    line["msg"] = str(msg)
    line.update(fields)
    text = json.dumps(line, separators=(",", ":"), default=str) + "\n"
    with _lock:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


class Logger:
    """A logger bound to one RPC method; `call.log` is one."""

    def __init__(self, method=None):
        self.method = method

    def debug(self, msg, **fields):
        log("debug", msg, self.method, **fields)

    def info(self, msg, **fields):
        log("info", msg, self.method, **fields)

    def warning(self, msg, **fields):
        log("warn", msg, self.method, **fields)

    def error(self, msg, **fields):
        log("error", msg, self.method, **fields)

"""Record and replay ROS 2 topics as MCAP (rosbag2-compatible: CDR messages, ros2msg schemas).

Schemas are the installed ``.msg`` definitions (``<prefix>/share/<pkg>/msg/<Type>.msg``) with
their dependencies appended in rosbag2's format, so ``ros2 bag info/play`` can read the file.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from mcap.reader import make_reader
from mcap.writer import Writer

SEP = "=" * 80
_BUILTIN = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
            "int64", "uint64", "string", "wstring", "time", "duration"}


def _msg_file(pkg: str, name: str) -> Path:
    for root in [Path(sys.prefix) / "share"] + [Path(p) / "share" for p in sys.path if p.endswith("site-packages")]:
        p = root / pkg / "msg" / f"{name}.msg"
        if p.is_file():
            return p
    raise FileNotFoundError(f"message definition {pkg}/msg/{name}.msg not found")


def _deps(pkg: str, text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or "=" in line.split()[0]:
            continue
        t = re.sub(r"\[.*?\]", "", line.split()[0])
        t = re.sub(r"<=\d+", "", t)
        if t in _BUILTIN or t.startswith("string"):
            continue
        out.append(tuple(t.split("/")) if "/" in t else (pkg, t))
    return out


def schema_text(type_name: str, main: str | None = None) -> str:
    """'sensor_msgs/msg/JointState' -> rosbag2 ros2msg schema text with dependencies. ``main``:
    the type's own definition, for a type whose package is not installed (tf2_msgs)."""
    pkg, _, name = type_name.split("/")
    main = _msg_file(pkg, name).read_text() if main is None else main
    seen, parts, todo = set(), [], _deps(pkg, main)
    while todo:
        dpkg, dname = todo.pop(0)
        dname = dname.split("/")[-1]
        if (dpkg, dname) in seen:
            continue
        seen.add((dpkg, dname))
        text = _msg_file(dpkg, dname).read_text()
        parts.append(f"{SEP}\nMSG: {dpkg}/{dname}\n{text}")
        todo += _deps(dpkg, text)
    return "\n".join([main] + parts)


def type_name(msg) -> str:
    mod = type(msg).__module__.split(".")  # e.g. sensor_msgs.msg._joint_state
    return f"{mod[0]}/msg/{type(msg).__name__}"


class McapRecorder:
    """Write ROS 2 messages (already received or about to be published) to an MCAP file."""

    def __init__(self, path: str | Path):
        from rclpy.serialization import serialize_message
        self._serialize = serialize_message
        self._f = open(path, "wb")
        self._w = Writer(self._f)
        self._w.start(profile="ros2", library="planner_node")
        self._channels: dict[str, int] = {}
        self._seq = 0

    def write(self, topic: str, msg, t_ns: int) -> None:
        tn = type_name(msg)
        self.write_cdr(topic, tn, lambda: schema_text(tn), self._serialize(msg), t_ns)

    def write_cdr(self, topic: str, type_name: str, schema, data: bytes, t_ns: int) -> None:
        """A message already encoded as CDR, of a type given by its ros2msg ``schema`` text (or a
        function returning it, called once per topic)."""
        if topic not in self._channels:
            text = schema() if callable(schema) else schema
            sid = self._w.register_schema(name=type_name, encoding="ros2msg", data=text.encode())
            self._channels[topic] = self._w.register_channel(topic=topic, message_encoding="cdr", schema_id=sid)
        self._seq += 1
        self._w.add_message(channel_id=self._channels[topic], log_time=t_ns, publish_time=t_ns, data=data,
                            sequence=self._seq)

    def close(self) -> None:
        self._w.finish()
        self._f.close()


def read_messages(path: str | Path, topics: list[str] | None = None):
    """Yield (topic, message, log_time_ns) from an MCAP written by McapRecorder or rosbag2."""
    from rclpy.serialization import deserialize_message
    with open(path, "rb") as f:
        reader = make_reader(f)
        for schema, channel, message in reader.iter_messages(topics=topics):
            pkg, _, name = schema.name.split("/")
            cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
            yield channel.topic, deserialize_message(message.data, cls), message.log_time

"""Each accepted framing yields the same event as the app's own line, and ordinary lines in any framing
are skipped: Fluent Bit out_file (parsed and unparsed records), Fluent Bit plain (parsed and unparsed),
Docker json-file (whole and split lines) and Kubernetes CRI (F and P+F lines)."""

from __future__ import annotations

import orjson
import pytest
from _parser_lines import NOW, block, event_line

from parsers import LineParser
from parsers.event import to_json_dict

LINE = event_line("db")
ORDINARY = b'{"level":"INFO","message":"GET /health 200"}'
CRI_TS = b"2026-11-29T10:15:04.512345678Z"


def docker(text: str, stream: str = "stdout") -> bytes:
    return orjson.dumps({"log": text, "stream": stream, "time": "2026-11-29T10:15:04.512345678Z"})


FRAMINGS = {
    "app": lambda x: x,
    "fluent-bit plain (parsed)": lambda x: x,
    "fluent-bit plain (unparsed)": lambda x: orjson.dumps({"log": x.decode()}),
    "fluent-bit plain (unparsed, k8s metadata)": lambda x: orjson.dumps(
        {"log": x.decode(), "kubernetes": {"pod_name": "web-1", "labels": {"app": "web"}}}),
    "fluent-bit out_file (parsed)": lambda x: b"app.events: [1764411304.512345, " + x + b"]",
    "fluent-bit out_file (unparsed)": lambda x: b"kube.var.log.containers.web: [1764411304.512345, "
    + orjson.dumps({"log": x.decode()}) + b"]",
    "fluent-bit out_file (docker record)": lambda x: b"tail.0: [1764411304.512345, " + docker(x.decode() + "\n") + b"]",
    "fluent-bit out_file (escaped slashes)": lambda x: b"app: [1764411304.512345, " + x.replace(b"/", b"\\/") + b"]",
    "docker json-file": lambda x: docker(x.decode() + "\n"),
    "docker json-file (stderr)": lambda x: docker(x.decode() + "\n", "stderr"),
    "cri F": lambda x: CRI_TS + b" stdout F " + x,
    "cri stderr F": lambda x: CRI_TS + b" stderr F " + x,
}


@pytest.mark.parametrize("name", list(FRAMINGS))
def test_framing_gives_the_same_event(name: str) -> None:
    """An event line wrapped in the framing parses to the same event; an ordinary line in the same
    framing is skipped; the counts add up."""
    wrap = FRAMINGS[name]
    expected = to_json_dict(LineParser(now=NOW).parse(block(LINE)).events[0])
    result = LineParser(now=NOW).parse(block(wrap(LINE), wrap(ORDINARY), wrap(LINE)))
    assert result.invalid == {}, result.dead_letters
    assert (result.lines, len(result.events), result.skipped) == (3, 2, 1)
    assert all(to_json_dict(ev) == expected for ev in result.events)


def test_cri_partial_lines_are_joined() -> None:
    """CRI `P` pieces are joined with the following pieces up to `F`; the logical line counts once."""
    pieces = [LINE[:50], LINE[50:120], LINE[120:]]
    data = block(
        CRI_TS + b" stdout P " + pieces[0],
        CRI_TS + b" stdout P " + pieces[1],
        CRI_TS + b" stdout F " + pieces[2],
        CRI_TS + b" stdout F " + ORDINARY,
    )
    result = LineParser(now=NOW).parse(data)
    assert (result.lines, result.fragments, len(result.events), result.skipped) == (2, 2, 1, 1)
    assert result.events[0].db_system == "postgresql"


def test_docker_split_lines_are_joined() -> None:
    """Docker json-file records without the trailing newline continue in the next record."""
    text = LINE.decode()
    data = block(docker(text[:100]), docker(text[100:200]), docker(text[200:] + "\n"), docker("plain\n"))
    result = LineParser(now=NOW).parse(data)
    assert (result.lines, result.fragments, len(result.events), result.skipped) == (2, 2, 1, 1)


def test_unterminated_partial_is_parsed_as_it_is() -> None:
    """A partial line whose end is not in the block is classified as it stands (never dropped)."""
    data = block(CRI_TS + b" stdout P " + LINE[:80])
    result = LineParser(now=NOW).parse(data, "pod.log")
    assert result.lines == 1 and result.invalid == {"bad_json": 1}
    data = block(CRI_TS + b" stdout P " + LINE)
    assert len(LineParser(now=NOW).parse(data).events) == 1


def test_dead_letter_offset_in_a_framing_points_at_the_physical_line() -> None:
    """A refused event inside a wrapper is dead-lettered with the wrapper line (its first piece's offset)."""
    bad = event_line("db", duration_ms=-3)
    first = CRI_TS + b" stdout F " + LINE
    data = block(first, CRI_TS + b" stdout P " + bad[:40], CRI_TS + b" stdout F " + bad[40:])
    result = LineParser(now=NOW).parse(data, "pod.log", 10)
    (dl,) = result.dead_letters
    assert dl.reason == "bad_duration" and dl.offset == 10 + len(first) + 1
    assert dl.line == data[len(first) + 1 : -1]


def test_broken_wrapper_with_event_inside_is_bad_json() -> None:
    """A wrapper that cannot be taken off, around what looks like an event, is invalid (not skipped)."""
    lines = [b"app.events: [1764411304.5, " + LINE, b'{"log":"{\\"apm.schema\\":1,"', b"2026-11-29T10:15:04Z stdout X " + LINE]
    result = LineParser(now=NOW).parse(block(*lines))
    assert result.invalid == {"bad_json": 3}


def test_partial_lines_join_within_their_stream() -> None:
    """stdout and stderr share the file: a stdout P piece joins the next stdout piece, not the stderr line
    written in between (which is a line of its own); the same for Docker records."""
    data = block(
        CRI_TS + b" stdout P " + LINE[:90],
        CRI_TS + b" stderr F " + ORDINARY,
        CRI_TS + b" stdout F " + LINE[90:],
    )
    result = LineParser(now=NOW).parse(data)
    assert (result.lines, result.fragments, len(result.events), result.skipped, result.invalid) == (2, 1, 1, 1, {})
    text = LINE.decode()
    data = block(docker(text[:90]), docker("warning\n", "stderr"), docker(text[90:] + "\n"))
    result = LineParser(now=NOW).parse(data)
    assert (result.lines, result.fragments, len(result.events), result.skipped, result.invalid) == (2, 1, 1, 1, {})

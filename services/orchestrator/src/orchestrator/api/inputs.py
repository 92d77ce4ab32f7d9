"""What a request may carry, checked before the use cases and the database see it.

Hostile input stops here: a path or query that is not UTF-8 or holds a control character (PostgreSQL
cannot store NUL in text) is a 400, checked by `clean_target` for the middleware, once for every route;
the body of `POST /v1/sagas` is parsed by this module, not by FastAPI, so that only I-JSON (RFC 7493:
UTF-8, unique member names, numbers a double holds exactly) in `application/json` gets through, with no
control characters or unpaired surrogates in any string and bounded nesting. The saga definition then
refuses, with 422, every payload a participant would refuse.

Where a rule is a pattern, the OpenAPI document and the server use the same one, from here (the server
with `fullmatch`, so a `$` never lets a trailing newline through): a value the document admits is
accepted, and any other gets a documented 4xx. The Idempotency-Key, deadline and cursor are read here.
"""

import base64
import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.api.problems import MAX_PROBLEMS, PROBLEM_TYPES, Problem

# Text no input may carry: C0 controls and DEL (PostgreSQL cannot store NUL; the others only hide
# things, such as a newline a `$` anchor lets through) and unpaired surrogates, which a JSON `\ud800`
# escape decodes to and which no UTF-8 encoder (asyncpg's included) accepts.
_BAD_TEXT: Final = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# A saga body is four levels deep; anything past this is an attack, not an order.
_MAX_DEPTH: Final = 32
# I-JSON (RFC 7493): integers beyond this are not exact in the double most JSON parsers use.
_MAX_SAFE_INTEGER: Final = 2**53 - 1

# Patterns shared by the OpenAPI document (ECMA-262, where `$` is the end of the text) and the server
# (`fullmatch`, for the same meaning in Python): one spelling, so the two cannot drift apart. Digits
# are [0-9]: `\d` also matches non-ASCII digits in Python.
UUID_PATTERN: Final = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# SPEC section 3: 1-255 printable ASCII characters; not only spaces, which HTTP would strip to nothing.
KEY_PATTERN: Final = r"^[\x20-\x7E]*[\x21-\x7E][\x20-\x7E]*$"
# A whole number of one unit, from 1ms to 24h: the range is in the pattern, so the document can say it.
DEADLINE_PATTERN: Final = (
    r"^(?:(?:[1-9][0-9]{0,6}|[1-7][0-9]{7}|8[0-5][0-9]{6}|86[0-3][0-9]{5}|86400000)ms"
    r"|(?:[1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}|86400)s"
    r"|(?:[1-9][0-9]{0,2}|1[0-3][0-9]{2}|14[0-3][0-9]|1440)m"
    r"|(?:[1-9]|1[0-9]|2[0-4])h)$"
)
# `<microseconds since 1970-01-01 UTC>.<saga id as 32 hex digits>`. Every value of this shape is one the
# server can use (17 digits stay below the year 9999), so no cursor the document admits is refused.
CURSOR_PATTERN: Final = r"^([0-9]{1,17})\.([0-9a-f]{32})$"
# A query value the middleware lets through: no C0 control character and no DEL.
TEXT_PATTERN: Final = r"^[^\x00-\x1F\x7F]*$"
_KEY: Final = re.compile(KEY_PATTERN)
_DEADLINE: Final = re.compile(DEADLINE_PATTERN)
_CURSOR: Final = re.compile(CURSOR_PATTERN)
_DEADLINE_UNITS: Final = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


class StartSagaBody(BaseModel):
    """Body of `POST /v1/sagas`; an unknown member is refused rather than silently dropped (a typo'd deadline)."""

    model_config = ConfigDict(extra="forbid")

    saga_type: str = Field(min_length=1, max_length=100)
    deadline: str | None = None
    payload: dict[str, Any]


_REASON: Final = Field(min_length=1, max_length=1000)


class ReasonBody(BaseModel):
    """Body of a queue action that takes only a reason (retry, force compensation, resolve)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, _REASON]


class RetryWithPayloadBody(BaseModel):
    """Body of retry-with-payload: the corrected payload (validated like a start's) and why."""

    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any]
    reason: Annotated[str, _REASON]


class SkipStepBody(BaseModel):
    """Body of skip-step: the stuck step (a guard against acting on a stale view), its output, and why."""

    model_config = ConfigDict(extra="forbid")

    step: str = Field(min_length=1, max_length=100)
    output: dict[Annotated[str, Field(min_length=1, max_length=100)], Annotated[str, Field(max_length=1000)]] = Field(
        max_length=50
    )
    reason: Annotated[str, _REASON]


class PlanBody(BaseModel):
    """Body of the dry run: what `POST /v1/sagas` would take, without the saga type (it is in the path)."""

    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any]
    deadline: str | None = None


def clean_target(scope: Mapping[str, Any]) -> bool:
    """True when the percent-decoded path and query are UTF-8 without control characters.

    The raw bytes are checked, not the server's decoded `path`, which replaces bad UTF-8 silently.
    """
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
    for part in (raw_path, scope.get("query_string") or b""):
        try:
            text = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return False
        if _BAD_TEXT.search(text):
            return False
    return True


def printable(text: str) -> str:
    """Text with its control characters and unpaired surrogates spelled as backslash-u escapes, for messages."""
    return _BAD_TEXT.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def idempotency_key(value: str | None) -> str:
    """The Idempotency-Key header as sent: 1-255 printable ASCII characters, not only spaces (`KEY_PATTERN`)."""
    if value is None:
        raise Problem("missing-idempotency-key", "send an Idempotency-Key header")
    if len(value) > 255 or not _KEY.fullmatch(value):
        raise Problem("malformed-idempotency-key", "the key must be 1-255 printable ASCII characters, not only spaces")
    return value


def deadline(value: str | None) -> timedelta | None:
    """The optional deadline override: a whole number of ms, s, m or h, from 1ms to 24h (`DEADLINE_PATTERN`)."""
    if value is None:
        return None
    if not _DEADLINE.fullmatch(value):
        raise Problem("invalid-deadline", PROBLEM_TYPES["invalid-deadline"][2])
    number = value.rstrip("msh")
    return timedelta(**{_DEADLINE_UNITS[value[len(number) :]]: int(number)})


def repository_cursor(value: str | None) -> str | None:
    """This API's cursor (`CURSOR_PATTERN`) as the repository's keyset cursor, `base64(<isoformat>|<uuid>)`.

    The API spells the cursor itself rather than passing the repository's on: every string of the
    documented shape is a position the repository can use, so none is refused as forged, while the
    repository's base64 text would admit many strings it cannot parse (and some that failed only in
    the driver, as a 500). A string of another shape is a 400.
    """
    if value is None:
        return None
    match = _CURSOR.fullmatch(value)
    if match is None:
        raise Problem("malformed-cursor", "a cursor is the next_cursor of an earlier page")
    at = _EPOCH + int(match[1]) * _MICROSECOND
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{uuid.UUID(match[2])}".encode()).decode()


def api_cursor(value: str | None) -> str | None:
    """The repository's next-page cursor as this API spells it (see `repository_cursor`)."""
    if value is None:
        return None
    at, _, saga_id = base64.urlsafe_b64decode(value).decode().partition("|")
    return f"{(datetime.fromisoformat(at) - _EPOCH) // _MICROSECOND}.{uuid.UUID(saga_id).hex}"


class _NotIJson(ValueError):
    """Valid JSON text that is not I-JSON (RFC 7493): ambiguous or inexact wherever it is read."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook that refuses a repeated member name: parsers disagree on which one wins."""
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise _NotIJson(f"the member name {printable(name[:64])!r} appears twice in one object")
        members[name] = value
    return members


def _exact_integer(text: str) -> int:
    """Integers a double holds exactly; the length check comes first, so a 60,000-digit literal costs nothing."""
    if len(text) > 17 or abs(value := int(text)) > _MAX_SAFE_INTEGER:
        raise _NotIJson(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is beyond +/-(2**53 - 1)")
    return value


def _finite_float(text: str) -> float | int:
    """Floats that stay finite (1e400 would become infinity, which JSON cannot even spell).

    JSON has one number type (RFC 8259 section 6): `2.0` and `2e0` are the integer 2, as JSON Schema's
    `integer` says, so they are read as 2 wherever a double holds them exactly.
    """
    value = float(text)
    if not math.isfinite(value):
        raise _NotIJson(f"the number {text[:20]} is out of range")
    return int(value) if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER else value


def _no_constant(name: str) -> Any:
    """NaN and Infinity are Python's extension, not JSON."""
    raise _NotIJson(f"{name} is not JSON")


def _json_document(raw: bytes) -> Any:
    """Parse a body as I-JSON.

    Raises:
        Problem: 400 for text that is not UTF-8, not JSON or not I-JSON; 422 for nesting so deep the
            parser gives up (bounded nesting is checked again, with a path, by `_text_problems`).
    """
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members, parse_int=_exact_integer,
                          parse_float=_finite_float, parse_constant=_no_constant)  # fmt: skip
    except UnicodeDecodeError as exc:
        raise Problem("malformed-json", "the body is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise Problem("malformed-json", "the body is not valid JSON",
                      errors=[f"body: {exc.msg} at character {exc.pos}"]) from exc  # fmt: skip
    except _NotIJson as exc:
        raise Problem("malformed-json", str(exc)) from exc
    except RecursionError as exc:
        raise Problem("invalid-request", "the body is nested too deeply",
                      errors=[f"body: nested deeper than {_MAX_DEPTH} levels"]) from exc  # fmt: skip


def _text_problems(value: Any, path: str = "", depth: int = 1) -> list[str]:
    """What no body may hold, as `path: reason` lines in document order.

    That is every string (member names too) with a control character or an unpaired surrogate, and
    every container nested deeper than `_MAX_DEPTH`. The recursion stops at that depth, so it is bounded.
    """
    problems: list[str] = []
    if isinstance(value, str):
        if found := _BAD_TEXT.search(value):
            problems.append(f"{path or 'body'}: must not contain control characters or unpaired surrogates "
                            f"(found U+{ord(found.group()):04X})")  # fmt: skip
    elif isinstance(value, dict | list) and depth > _MAX_DEPTH:
        problems.append(f"{path or 'body'}: nested deeper than {_MAX_DEPTH} levels")
    elif isinstance(value, dict):
        for name, member in value.items():
            where = f"{path}.{printable(name[:64])}" if path else printable(name[:64])
            problems += _text_problems(name, f"{where} (member name)", depth)
            problems += _text_problems(member, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += _text_problems(item, f"{path}[{index}]", depth + 1)
    return problems[:MAX_PROBLEMS]


def start_body(content_type: str | None, content_encoding: str | None, raw: bytes) -> StartSagaBody:
    """The body of `POST /v1/sagas`: JSON, I-JSON, clean text, then the model.

    Only `application/json` is taken (the one media type the OpenAPI document declares), in UTF-8, the
    only charset JSON has (RFC 8259 section 8.1), and without content coding.

    Raises:
        Problem: 415 for another media type, charset or coding; 400 for malformed JSON; 422 for bad
            text, deep nesting or a body the model refuses.
    """
    return _model_body(content_type, content_encoding, raw, StartSagaBody, "saga_type and payload")


Body = TypeVar("Body", bound=BaseModel)


def action_body(content_type: str | None, content_encoding: str | None, raw: bytes, model: type[Body]) -> Body:
    """The JSON body of a queue action or a dry run, checked exactly like the start body (see `start_body`).

    Raises:
        Problem: 415 for another media type, charset or coding; 400 for malformed JSON; 422 for bad
            text, deep nesting or a body the model refuses (`invalid-payload` when only the payload is).
    """
    return _model_body(content_type, content_encoding, raw, model, ", ".join(model.model_fields))


def _model_body(
    content_type: str | None, content_encoding: str | None, raw: bytes, model: type[Body], members: str
) -> Body:
    if not raw:
        raise Problem("invalid-request", "the request needs a JSON body",
                      errors=[f"body: a JSON object with {members} is required"])  # fmt: skip
    media, *params = [part.strip().lower() for part in (content_type or "").split(";")]
    charsets = {p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")}
    if (
        media != "application/json"
        or not charsets <= {"utf-8"}
        or (content_encoding or "identity").lower() != "identity"
    ):
        raise Problem("unsupported-media-type", PROBLEM_TYPES["unsupported-media-type"][2])
    document = _json_document(raw)
    if problems := _text_problems(document):
        inside_payload = all(p.startswith("payload") for p in problems)
        kind = "invalid-payload" if inside_payload else "invalid-request"
        raise Problem(kind, "the body holds text this API does not accept", errors=problems)
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise Problem("invalid-request", "the request does not match the API", errors=problems[:MAX_PROBLEMS]) from exc

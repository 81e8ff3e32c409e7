"""A driver's config and secrets, declared as dataclasses: their JSON Schema
for GetInfo, and the checks that ValidateConfig and every provider call run.

For the same mistake the diagnostics have the severity, JSON Pointer field
path and summary of the C SDK's (driver-sdk/src/config_schema.c); the
shared table tests/fixtures/config-diagnostics.json proves it against a C
driver declaring the same fields. Secret values never enter a diagnostic.

    @dataclass
    class Config:
        region: str = setting(description="where machines are made")
        capacity: int = setting(8, minimum=1, maximum=64)
        tier: Literal["basic", "pro"] = "basic"
        zones: list[str] = setting(default_factory=list)

    @dataclass
    class Secrets:
        api_key: str                      # required
        proxy_password: Optional[str] = None
"""

import dataclasses
import json
import math
import typing

from .protocol import pb

__all__ = ["setting", "Diagnostics", "Schema", "json_pointer"]

_META = "drover"
_INT64 = 2 ** 63


def setting(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, description="", minimum=None,
            maximum=None):
    """A dataclass field with a description and, for numbers, bounds."""
    meta = {_META: {"description": description, "minimum": minimum, "maximum": maximum}}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def json_pointer(*parts):
    """A JSON Pointer from path parts, escaped as RFC 6901 says."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class Diagnostics:
    """Collects the diagnostics of ValidateConfig (Terraform style)."""

    def __init__(self):
        self.items = []

    def error(self, field_path, summary, detail=""):
        self.items.append(pb.Diagnostic(severity=pb.SEVERITY_ERROR, summary=summary, detail=detail,
                                        field_path=field_path))

    def warning(self, field_path, summary, detail=""):
        self.items.append(pb.Diagnostic(severity=pb.SEVERITY_WARNING, summary=summary, detail=detail,
                                        field_path=field_path))

    @property
    def errors(self):
        return [d for d in self.items if d.severity == pb.SEVERITY_ERROR]


@dataclasses.dataclass
class _Field:
    name: str
    kind: str  # string, integer, number, boolean, array (of strings)
    required: bool
    secret: bool
    description: str = ""
    default: typing.Any = None
    has_default: bool = False
    minimum: typing.Optional[float] = None
    maximum: typing.Optional[float] = None
    enum: typing.Optional[list] = None


_KINDS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _kind_of(cls, name, hint):
    """(kind, enum values or None, optional) of a type hint; TypeError on
    one the schema cannot express."""
    optional = False
    origin = typing.get_origin(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError("%s.%s: only Optional[X] unions are supported" % (cls.__name__, name))
        optional, hint = True, args[0]
        origin = typing.get_origin(hint)
    if hint in _KINDS:
        return _KINDS[hint], None, optional
    if origin is list and typing.get_args(hint) in ((str,), ()):
        return "array", None, optional
    if origin is typing.Literal and all(isinstance(a, str) for a in typing.get_args(hint)):
        return "string", list(typing.get_args(hint)), optional
    raise TypeError("%s.%s: type %r is not one of str, int, float, bool, list[str], Literal[str, ...] or "
                    "Optional of those" % (cls.__name__, name, hint))


def _fields_of(cls, secret):
    if cls is None:
        return []
    if not dataclasses.is_dataclass(cls):
        raise TypeError("%s must be a @dataclass" % cls.__name__)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, enum, optional = _kind_of(cls, f.name, hints[f.name])
        meta = f.metadata.get(_META, {})
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is None or default is dataclasses.MISSING:
            has_default, default = False, None
        out.append(_Field(name=f.name, kind=kind, secret=secret, enum=enum,
                          required=not optional and f.default is dataclasses.MISSING
                          and f.default_factory is dataclasses.MISSING,
                          description=meta.get("description", ""), default=default, has_default=has_default,
                          minimum=meta.get("minimum"), maximum=meta.get("maximum")))
    return out


def _json_kind(v):
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _type_ok(kind, v):
    if kind == "string":
        return isinstance(v, str)
    if kind == "integer":
        # JSON Schema counts 3.0 as an integer; so does the C SDK.
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and v == math.floor(v) and abs(v) < 9e15)
    if kind == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "boolean":
        return isinstance(v, bool)
    return isinstance(v, list)


def _check_field(f, v, diags):
    path = json_pointer(f.name)
    if not _type_ok(f.kind, v):
        diags.error(path, "wrong type", 'field "%s" must be %s %s, got %s' % (
            f.name, "an" if f.kind in ("integer", "array") else "a",
            "array of strings" if f.kind == "array" else f.kind, _json_kind(v)))
        return
    if f.kind == "array":
        for i, e in enumerate(v):
            if not isinstance(e, str):
                diags.error("%s/%d" % (path, i), "wrong type",
                            'element %d of "%s" must be a string, got %s' % (i, f.name, _json_kind(e)))
        return
    if f.kind == "string" and f.enum is not None:
        if v not in f.enum:
            diags.error(path, "value not allowed", '"%.100s" is not one of %s' % (
                v, ", ".join('"%s"' % e for e in f.enum)))
        return
    if f.kind in ("integer", "number"):
        if f.minimum is not None and v < f.minimum:
            diags.error(path, "value below minimum", 'field "%s" is %g; the minimum is %g' % (f.name, v, f.minimum))
        if f.maximum is not None and v > f.maximum:
            diags.error(path, "value above maximum", 'field "%s" is %g; the maximum is %g' % (f.name, v, f.maximum))


class _BadJSON(ValueError):
    pass


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise _BadJSON("duplicate object key %r" % k)
        obj[k] = v
    return obj


def _int64(text):
    v = int(text)
    if not -_INT64 <= v < _INT64:
        raise _BadJSON("too big integer")
    return v


def _no_constant(name):
    raise _BadJSON("invalid token %r" % name)


def _parse(text):
    """The config text as JSON, parsed as strictly as jansson parses it."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_int64, parse_constant=_no_constant)


class Schema:
    """A driver's config and secrets declarations, checked once at start."""

    def __init__(self, type_name, config_cls=None, secrets_cls=None):
        self.type_name = type_name
        self.config_cls = config_cls
        self.secrets_cls = secrets_cls
        self.fields = _fields_of(config_cls, False)
        self.secrets = _fields_of(secrets_cls, True)
        for f in self.fields + self.secrets:
            self._check_declaration(f)

    @staticmethod
    def _check_declaration(f):
        # The same rules as drv__config_field_check: a declaration that would
        # publish a schema its own checks refuse is a bug, found at start.
        if (f.minimum is not None or f.maximum is not None) and f.kind not in ("integer", "number"):
            raise TypeError('config field "%s" has a minimum or maximum but is not int or float' % f.name)
        if f.minimum is not None and f.maximum is not None and f.minimum > f.maximum:
            raise TypeError('config field "%s" has a minimum %g above its maximum %g' % (f.name, f.minimum, f.maximum))
        if f.secret and (f.kind != "string" or f.enum is not None):
            raise TypeError('secret "%s" must be a str (secrets are a map of strings)' % f.name)
        if f.secret and f.has_default:
            raise TypeError('secret "%s" has a default; secrets cannot have one' % f.name)
        if f.has_default:
            d = Diagnostics()
            _check_field(f, f.default, d)
            if d.items:
                raise TypeError('default %r of config field "%s" fails its own declaration: %s (%s)' % (
                    f.default, f.name, d.items[0].summary, d.items[0].detail))

    def _schema(self, fields, what):
        props = {}
        for f in fields:
            p = {"type": f.kind}
            if f.kind == "array":
                p["items"] = {"type": "string"}
            if f.description:
                p["description"] = f.description
            if f.has_default:
                p["default"] = f.default
            if f.minimum is not None:
                p["minimum"] = f.minimum
            if f.maximum is not None:
                p["maximum"] = f.maximum
            if f.enum is not None:
                p["enum"] = list(f.enum)
            if f.secret:
                p["writeOnly"] = True
            props[f.name] = p
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "title": "%s backend %s" % (self.type_name, what), "type": "object", "properties": props}
        required = [f.name for f in fields if f.required]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return json.dumps(schema, separators=(",", ":"))

    def config_schema_json(self):
        return self._schema(self.fields, "config")

    def secrets_schema_json(self):
        return self._schema(self.secrets, "secrets")

    def check(self, backend_config, diags):
        """Checks a BackendConfig message. Returns (config, secrets) as
        instances of the declared dataclasses (dicts when none is declared),
        or None when an error was added to `diags`."""
        n_errors = len(diags.errors)
        text = backend_config.config_json
        root = None
        if not text.strip(" \t\n\r"):
            root = {}
        else:
            try:
                root = _parse(text)
            except (ValueError, RecursionError) as e:
                where = "line %d, column %d: " % (e.lineno, e.colno) if hasattr(e, "lineno") else ""
                diags.error("", "config is not valid JSON", where + str(getattr(e, "msg", e)))
            else:
                if not isinstance(root, dict):
                    diags.error("", "config must be a JSON object",
                                'config_json is a JSON %s; write the config as {"field": value, ...}' % _json_kind(root))
                    root = None
        if root is not None:
            self._check_fields(root, diags)
        self._check_secrets(backend_config.secrets, diags)
        if len(diags.errors) != n_errors:
            return None
        return self._build(root, dict(backend_config.secrets))

    def _check_fields(self, root, diags):
        names = {f.name for f in self.fields}
        secret_names = {f.name for f in self.secrets}
        for f in self.fields:
            v = root.get(f.name)
            if v is None:
                if f.required:
                    diags.error(json_pointer(f.name), "missing required field", 'field "%s" is required%s' % (
                        f.name, ": " + f.description if f.description else ""))
                continue
            _check_field(f, v, diags)
        for key in root:
            if key in names:
                continue
            if key in secret_names:
                diags.error(json_pointer(key), "secret in config",
                            '"%.100s" is a secret: pass it in BackendConfig.secrets, not in the config JSON' % key)
            else:
                diags.error(json_pointer(key), "unknown field",
                            '"%.100s" is not a config field of this driver; known fields: %s' % (
                                key, ", ".join(f.name for f in self.fields) or "(none)"))

    def _check_secrets(self, secrets, diags):
        names = {f.name for f in self.secrets}
        for key in secrets:
            if key not in names:
                diags.error(json_pointer("secrets", key), "unknown secret",
                            '"%.100s" is not a secret of this driver; known secrets: %s' % (
                                key, ", ".join(f.name for f in self.secrets) or "(none)"))
        for f in self.secrets:
            if f.required and not secrets.get(f.name):
                diags.error(json_pointer("secrets", f.name), "missing required secret",
                            'secret "%s" is required%s' % (f.name, ": " + f.description if f.description else ""))

    def _build(self, root, secrets):
        values = {}
        for f in self.fields:
            v = root.get(f.name)
            if v is None:
                continue
            values[f.name] = int(v) if f.kind == "integer" else list(v) if f.kind == "array" else v
        config = self.config_cls(**values) if self.config_cls else values
        secret_values = {f.name: secrets[f.name] for f in self.secrets if secrets.get(f.name)}
        return config, (self.secrets_cls(**secret_values) if self.secrets_cls else secret_values)

"""Config dataclasses: the schema, the declaration checks, and the values
handlers get. The diagnostics themselves are compared with the C SDK's in
test_config_shared_table.py."""

import dataclasses
import json
from typing import Literal, Optional

import pytest

import drover_driver as dd
from drover_driver.config import Diagnostics, Schema
from drover_driver.protocol import pb


@dataclasses.dataclass
class Config:
    region: str = dd.setting(description="where")
    tier: Literal["basic", "pro"] = "basic"
    capacity: int = dd.setting(8, minimum=1, maximum=64)
    zones: list[str] = dd.setting(default_factory=lambda: ["a"])
    ratio: Optional[float] = None


@dataclasses.dataclass
class Secrets:
    api_key: str
    proxy: Optional[str] = None


def check(text, secrets=None):
    d = Diagnostics()
    out = Schema("t", Config, Secrets).check(pb.BackendConfig(config_json=text, secrets=secrets or {"api_key": "k"}), d)
    return out, d


def test_schema():
    s = Schema("acme", Config, Secrets)
    config = json.loads(s.config_schema_json())
    assert config["title"] == "acme backend config"
    assert config["required"] == ["region"]
    assert config["additionalProperties"] is False
    assert config["properties"]["tier"] == {"type": "string", "default": "basic", "enum": ["basic", "pro"]}
    assert config["properties"]["capacity"] == {"type": "integer", "default": 8, "minimum": 1, "maximum": 64}
    assert config["properties"]["zones"] == {"type": "array", "items": {"type": "string"}, "default": ["a"]}
    assert config["properties"]["ratio"] == {"type": "number"}
    secrets = json.loads(s.secrets_schema_json())
    assert secrets["required"] == ["api_key"]
    assert secrets["properties"]["api_key"] == {"type": "string", "writeOnly": True}


def test_values_with_defaults():
    (config, secrets), d = check('{"region": "eu", "capacity": 3.0}')
    assert d.items == []
    assert config == Config(region="eu", capacity=3)
    assert isinstance(config.capacity, int)
    assert secrets == Secrets(api_key="k")


def test_errors_give_no_values_and_no_secret_values():
    out, d = check('{"region": "eu", "api_key": "hunter2"}', {"api_key": "hunter2"})
    assert out is None
    assert [(x.field_path, x.summary) for x in d.items] == [("/api_key", "secret in config")]
    assert all("hunter2" not in x.detail for x in d.items)


def test_big_integer_and_nan_are_not_json():
    for text in ('{"region": "eu", "capacity": 99999999999999999999}', '{"region": "eu", "ratio": NaN}'):
        _, d = check(text)
        assert [x.summary for x in d.items] == ["config is not valid JSON"], text


@pytest.mark.parametrize("decl, message", [
    ("x: dict = None", "type"),
    ("x: str = dd.setting('a', minimum=1)", "minimum or maximum"),
    ("x: int = dd.setting(5, minimum=9, maximum=1)", "above its maximum"),
    ("x: int = dd.setting(0, minimum=1)", "fails its own declaration"),
    ("x: Literal['a', 'b'] = 'c'", "fails its own declaration"),
])
def test_bad_declarations_refused(decl, message):
    ns = {"dd": dd, "Literal": Literal}
    exec("import dataclasses\n@dataclasses.dataclass\nclass C:\n    " + decl, ns)
    with pytest.raises(TypeError, match=message):
        Schema("t", ns["C"])


def test_secret_with_default_refused():
    @dataclasses.dataclass
    class S:
        token: str = "x"

    with pytest.raises(TypeError, match="secrets cannot have one"):
        Schema("t", None, S)

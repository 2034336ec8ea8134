"""``docs/configuration.md`` against the code: every key ``modelport.yaml`` accepts, every
runtime option and warm-up key the code reads, and every server setting, with its flag,
variable and default; and every YAML example of the page, loaded by modelport's own loaders.

The key lists come from the code (the pydantic schema of ``modelport.config``, the
``Settings`` dataclass, the option reads of the runtimes), so a key added there and not here
fails this test.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import modelport
from modelport.config import CONFIG_FILE, _schema, load_config
from modelport.frameworks import RUNTIMES
from modelport.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
TEXT = DOC.read_text()
SRC = ROOT / "src" / "modelport"
DEMO = ROOT / "demo" / "iris"


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", TEXT, flags=re.S | re.M)
    assert match, f"{DOC.name} has no '## {title}' section"
    return match.group(1)


def _rows(text: str) -> list[list[str]]:
    """The cells of every table row (header and separator rows left out)."""
    rows = []
    lines = text.splitlines()
    for line, after in zip(lines, [*lines[1:], ""]):
        separator = after.startswith("|") and set(after) <= set("|-: ")
        if not line.startswith("|") or set(line) <= set("|-: ") or separator:
            continue  # not a row, a separator, or the header above one
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(cells)
    return rows


def _keys(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _pydantic_class(annotation: Any) -> Any:
    """The pydantic model inside ``annotation`` (``X``, ``X | None``, ``list[X]``), or None."""
    from pydantic import BaseModel

    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _pydantic_class(arg)
        if found is not None:
            return found
    return None


def _schema_keys(model: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> pydantic field info, for every key of the schema, nested ones too."""
    keys: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        keys[key] = info
        inner = _pydantic_class(info.annotation)
        if inner is not None:
            is_list = typing.get_origin(info.annotation) is list
            keys.update(_schema_keys(inner, f"{key}[]." if is_list else f"{key}."))
    return keys


def _default_forms(value: Any) -> list[str]:
    """How a default may be written in a table cell."""
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, float) and value.is_integer():
        return [repr(value), str(int(value))]
    return [str(value)]


# -- modelport.yaml ----------------------------------------------------------------------------


def _config_table() -> dict[str, list[str]]:
    """Documented key -> its row, from the keys table of ``## `modelport.yaml```."""
    table: dict[str, list[str]] = {}
    for row in _rows(_section("`modelport.yaml`")):
        if len(row) == 4:  # | key | type | default | what |
            for key in _keys(row[0]):
                table[key] = row
    return table


def test_every_modelport_yaml_key_is_documented_with_its_default() -> None:
    keys = _schema_keys(_schema())
    assert {"name", "batching.max_queue_size", "signature.inputs[].shape"} <= set(keys)
    table = _config_table()
    missing = sorted(k for k in keys if k not in table)
    assert not missing, f"keys of modelport.yaml missing from {DOC.name}: {missing}"
    for key, info in keys.items():
        default = info.default
        if isinstance(default, (bool, int, float)):
            cell = table[key][2]
            assert any(f in cell for f in _default_forms(default)), (key, default, cell)
    unknown = sorted(k for k in table if k not in keys and not k.startswith("warmup."))
    assert not unknown, f"{DOC.name} documents keys modelport.yaml refuses: {unknown}"


def _reads(pattern: str, files: list[Path]) -> set[str]:
    return {m for f in files for m in re.findall(pattern, f.read_text())}


def test_every_warmup_key_the_code_reads_is_documented() -> None:
    files = sorted((SRC / "runtime").glob("*.py"))
    read = _reads(r'warmup\.get\(\s*"(\w+)"', files) | _reads(r'"(\w+)" in warmup\b', files)
    read |= _reads(r'warmup\["(\w+)"\]', files)
    assert {"enabled", "inputs", "batch_sizes"} <= read
    table = _config_table()
    missing = sorted(k for k in read if f"warmup.{k}" not in table)
    assert not missing, f"warm-up keys missing from {DOC.name}: {missing}"


def test_every_runtime_option_the_runtimes_read_is_documented() -> None:
    files = [*sorted((SRC / "frameworks").glob("*.py")), SRC / "devices.py"]
    read = _reads(r'options\.get\(\s*"(\w+)"', files)
    read |= _reads(r'options\[\s*"(\w+)"\s*\]', files) | _reads(r'"(\w+)" in self\.options', files)
    read |= _reads(r'threads_option\(\s*self\.options,\s*"(\w+)"', files)
    if _reads(r"(threads_option)\(\s*self\.options\s*\)", files):
        read.add("intra_op_threads")  # its default key
    assert {"intra_op_threads", "providers", "nthread", "num_threads", "module"} <= read
    rows = [r for r in _rows(_section("`modelport.yaml`")) if len(r) == 5]
    documented = {key for row in rows for key in _keys(row[1])}
    missing = sorted(read - documented)
    assert not missing, f"runtime options missing from {DOC.name}: {missing}"
    frameworks = {name for row in rows for name in _keys(row[0])}
    assert frameworks == set(RUNTIMES), "the runtime table names each framework once or more"


# -- server settings -------------------------------------------------------------------------


def _serve_flags() -> dict[str, list[str]]:
    """Setting -> the flags ``modelport serve`` gives it (empty for the PATH argument)."""
    from modelport.cli.serve import serve

    flags: dict[str, list[str]] = {}
    for name, parameter in inspect.signature(serve).parameters.items():
        decls = getattr(parameter.default, "param_decls", None)
        if decls is None:
            continue
        flags[name] = list(decls) or [f"--{name.replace('_', '-')}"]
    return flags


def test_every_server_setting_is_documented_with_flag_variable_and_default() -> None:
    table = {
        key: row
        for row in _rows(_section("Server settings (`modelport serve --config`)"))
        if len(row) == 5
        for key in _keys(row[0])[:1]
    }
    flags = _serve_flags()
    names = [f.name for f in dataclasses.fields(Settings)]
    missing = sorted(n for n in names if n not in table)
    assert not missing, f"settings missing from {DOC.name}: {missing}"
    assert sorted(table) == sorted(names), "the table documents only real settings"
    for field in dataclasses.fields(Settings):
        row = table[field.name]
        assert f"`{ENV_PREFIX}{field.name.upper()}`" in row[2], (field.name, row[2])
        if field.name == "model_path":
            assert "PATH" in row[1]
        else:
            expected = flags.get(field.name, [f"--{field.name.replace('_', '-')}"])
            assert any(f"`{flag}`" in row[1] for flag in expected), (field.name, row[1])
        default = field.default
        if default is None or isinstance(default, Path):
            assert "none" in row[3].lower(), (field.name, row[3])
        else:
            assert any(f in row[3] for f in _default_forms(default)), (field.name, row[3])


# -- the examples ----------------------------------------------------------------------------


def _yaml_blocks() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", TEXT, flags=re.S)
    assert len(blocks) >= 4
    return blocks


def test_every_yaml_example_loads(tmp_path: Path) -> None:
    for i, block in enumerate(_yaml_blocks()):
        first = block.splitlines()[0]
        path = tmp_path / f"example{i}.yaml"
        path.write_text(block)
        if first.startswith(f"# {CONFIG_FILE}"):
            config = load_config(path)
            assert yaml.safe_load(block), first
            assert config is not None
        elif first.startswith("# settings file"):
            settings = Settings.load(config_file=path)
            assert settings.http_port == 8080 and settings.grpc_port is None
        else:
            pytest.fail(f"YAML example {i} says neither '# {CONFIG_FILE}' nor '# settings file'")


def test_examples_for_the_demo_really_run_it(tmp_path: Path) -> None:
    flower = np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)
    ran = 0
    for i, block in enumerate(_yaml_blocks()):
        if not block.startswith(f"# {CONFIG_FILE} for demo/iris"):
            continue
        folder = tmp_path / f"iris{i}"
        shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("__pycache__"))
        (folder / CONFIG_FILE).write_text(block)
        model = modelport.load(folder)
        config = load_config(folder / CONFIG_FILE)
        assert model.predict_batch({"input": flower})["label"].tolist() == [0]
        if "inputs" in config.warmup:  # what the server warms up on must fit the model
            outputs = model.predict_batch(model.to_inputs(config.warmup["inputs"]))
            assert len(outputs["label"]) >= 1
        if config.signature is not None:
            assert model.signature == config.signature
        ran += 1
    assert ran >= 2

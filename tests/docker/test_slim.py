"""docker/slim.py without an engine: the ELF stripping and the sourceless bytecode, on copies
of this venv's own packages. test_image.py checks the same in the built image.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from tests.docker import engine as eng

_spec = importlib.util.spec_from_file_location("initfetch_slim", eng.REPO / "docker" / "slim.py")
slim = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(slim)  # type: ignore[union-attr]


def _section_types(data: bytes) -> list[int]:
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    (shnum,) = struct.unpack_from("<H", data, 0x3C)
    return [struct.unpack_from("<I", data, shoff + i * 64 + 4)[0] for i in range(shnum)]


def _mapped_end(data: bytes) -> int:
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    ends = []
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:
            ends.append(p_offset + p_filesz)
    return max(ends)


def _copy_package(name: str, dest: Path) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    src = Path(next(iter(spec.submodule_search_locations)))
    shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest / name


def _run(code: str, path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_strip_drops_symbols_and_keeps_what_is_mapped(tmp_path: Path) -> None:
    pkg = _copy_package("yaml", tmp_path)
    (so,) = pkg.glob("_yaml*.so")
    data = so.read_bytes()
    assert 2 in _section_types(data), "the locked PyYAML wheel has a symbol table to drop"
    stripped = slim.strip_elf(data)
    assert stripped is not None and len(stripped) < len(data)
    assert 2 not in _section_types(stripped)  # no SHT_SYMTAB
    end = _mapped_end(data)
    assert stripped[:0x28] == data[:0x28] and stripped[0x40:end] == data[0x40:end]
    assert slim.strip_elf(stripped) is None  # nothing left to drop: a second pass is a no-op
    so.write_bytes(stripped)
    out = _run(
        "import yaml, yaml._yaml as c; print(c.__file__)\n"
        "print(yaml.load('a: [1]', Loader=yaml.CSafeLoader))",
        tmp_path,
    )
    assert out.splitlines() == [str(so), "{'a': [1]}"]


def test_strip_leaves_what_it_does_not_understand() -> None:
    assert slim.strip_elf(b"not an ELF file at all" * 4) is None
    assert slim.strip_elf(b"\x7fELF\x01\x01" + bytes(60)) is None  # 32-bit


def test_sourceless_bytecode_imports_and_keeps_our_sources(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    sp = venv / "lib" / "python3.11" / "site-packages"
    sp.mkdir(parents=True)
    _copy_package("jinja2", sp)
    _copy_package("markupsafe", sp)
    own = sp / "initfetch"
    own.mkdir()
    (own / "__init__.py").write_text("X = 1\n")
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(sys.executable)
    slim.compile_all(sp)
    assert not list((sp / "jinja2").rglob("*.py")) and (sp / "jinja2" / "__init__.pyc").is_file()
    assert (own / "__init__.py").is_file() and list((own / "__pycache__").glob("*.pyc"))
    # (Not imported here: this venv's editable initfetch would win over PYTHONPATH.)
    out = _run("import jinja2; print(jinja2.__file__, jinja2.Template('{{ a }}').render(a=2))", sp)
    assert out.split() == [str(sp / "jinja2" / "__init__.pyc"), "2"]
    # unchecked-hash: flags 0b01 in the header, so no mtime in the file and no source check.
    header = (sp / "jinja2" / "__init__.pyc").read_bytes()[4:8]
    assert int.from_bytes(header, "little") == 0b01

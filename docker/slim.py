"""Slim the image's virtual environment in the build stage (docs/containers.md, "Footprint").

    python3 slim.py /opt/initfetch

Drops what initfetch never loads and compiles the rest to bytecode that is the same on
every build. Every distribution stays installed, with its metadata and licence files;
only files inside a distribution that cannot be reached from initfetch are removed:

* botocore's service models except the services initfetch and the credential chain call;
* boto3's resource models (initfetch uses clients only) and *.pyi stubs;
* the symbol tables and debug info of extension modules (what `strip --strip-unneeded`
  drops; the base image has no binutils, so it is done here, and each one is imported after);
* third-party sources: they are compiled to sourceless .pyc files next to where the
  source was (`compileall -b`), which Python imports directly. initfetch's own package
  keeps its sources (tracebacks with source lines) and gets __pycache__ entries.

Running it again is harmless: it finds nothing more to drop and compiles what is new.

Bytecode uses --invalidation-mode unchecked-hash: no source mtime inside, so two builds
write the same bytes, and the interpreter never stats a source to validate a cache.
"""

from __future__ import annotations

import compileall
import importlib.machinery
import py_compile
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

# Services botocore loads for initfetch: its two providers, and the credential providers
# that call an AWS API (assume-role and web identity: sts; SSO profiles: sso, sso-oidc;
# `aws login` profiles: signin).
AWS_SERVICES = {"secretsmanager", "ssm", "sts", "sso", "sso-oidc", "signin"}
OWN_PACKAGE = "initfetch"


def site_packages(venv: Path) -> Path:
    (sp,) = venv.glob("lib/python3.*/site-packages")
    return sp


def remove(path: Path) -> int:
    """Delete a file or a tree; returns the bytes freed."""
    if path.is_dir() and not path.is_symlink():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(path)
        return size
    if path.exists() or path.is_symlink():
        size = path.lstat().st_size
        path.unlink()
        return size
    return 0


def prune_unused(sp: Path) -> int:
    freed = 0
    data = sp / "botocore" / "data"
    if data.is_dir():
        for entry in data.iterdir():
            if entry.is_dir() and entry.name not in AWS_SERVICES:
                freed += remove(entry)
        # Examples feed generated documentation only.
        for example in data.glob("*/*/examples-1.json"):
            freed += remove(example)
    freed += remove(sp / "boto3" / "data")  # resource models: boto3.resource() is never called
    freed += remove(sp / "boto3" / "examples")
    for stub in sp.rglob("*.pyi"):
        freed += remove(stub)
    for cache in list(sp.rglob("__pycache__")):  # whatever an install step compiled
        if cache.relative_to(sp).parts[0] != OWN_PACKAGE:  # ours: compile_all writes it
            freed += remove(cache)
    return freed


# ---- ELF: drop the symbol table and debug info of extension modules --------------------------
# What `strip --strip-unneeded` does for a shared object, without binutils in the image build:
# the sections no loader reads (.symtab, its .strtab, .debug_*, .comment) go; everything the
# program headers map stays byte for byte where it was. A file laid out any other way is
# left as it is.
SHF_ALLOC, SHF_INFO_LINK = 0x2, 0x40
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 4, 8, 9
PT_LOAD = 1
EHDR, SHDR = struct.Struct("<16sHHIQQQIHHHHHH"), struct.Struct("<IIQQQQIIQQ")


def strip_elf(data: bytes) -> bytes | None:
    """The stripped shared object, or None if there is nothing to drop or the layout is unusual."""
    if data[:6] != b"\x7fELF\x02\x01":  # 64-bit little-endian only (x86-64, aarch64)
        return None
    (ident, e_type, mach, ver, entry, phoff, shoff, flags, ehsize, phentsize, phnum,
     shentsize, shnum, shstrndx) = EHDR.unpack_from(data)  # fmt: skip
    if shnum == 0 or shentsize != SHDR.size or shstrndx >= shnum:
        return None
    secs = [list(SHDR.unpack_from(data, shoff + i * SHDR.size)) for i in range(shnum)]
    strtab = secs[shstrndx]
    names = [data[strtab[4] + s[0] : data.index(b"\0", strtab[4] + s[0])].decode() for s in secs]
    seg_end = 0
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize
        )
        if p_type == PT_LOAD:
            seg_end = max(seg_end, p_offset + p_filesz)
    symtab_links = {s[6] for s in secs if s[1] == SHT_SYMTAB}
    drop = {
        i for i, (name, s) in enumerate(zip(names, secs, strict=True))
        if i and not s[2] & SHF_ALLOC
        and (s[1] == SHT_SYMTAB or name.startswith(".debug") or name == ".comment"
             or (i in symtab_links and i != shstrndx))
    }  # fmt: skip
    if not drop:
        return None
    keep = [i for i in range(shnum) if i not in drop]
    index = {old: new for new, old in enumerate(keep)}
    out = bytearray(data[:seg_end])
    new_secs = []
    for old in keep:
        s = list(secs[old])
        if old and not s[2] & SHF_ALLOC:  # moved down, after the mapped part
            if s[4] < seg_end:
                return None
            if s[1] != SHT_NOBITS:
                align = max(s[8], 1)
                out += b"\0" * (-len(out) % align)
                out += data[s[4] : s[4] + s[5]]
                s[4] = len(out) - s[5]
        elif old and s[1] != SHT_NOBITS and s[4] + s[5] > seg_end:
            return None  # an allocated section outside every segment: not what a linker writes
        if s[6]:  # sh_link is a section index wherever it is set
            if s[6] in drop:
                return None
            s[6] = index[s[6]]
        if s[7] and (s[2] & SHF_INFO_LINK or s[1] in (SHT_REL, SHT_RELA)):
            if s[7] in drop:
                return None
            s[7] = index[s[7]]
        new_secs.append(s)
    out += b"\0" * (-len(out) % 8)
    new_shoff = len(out)
    for s in new_secs:
        out += SHDR.pack(*s)
    EHDR.pack_into(
        out, 0, ident, e_type, mach, ver, entry, phoff, new_shoff, flags, ehsize, phentsize,
        phnum, shentsize, len(new_secs), index[shstrndx],
    )  # fmt: skip
    return bytes(out)


def strip_extensions(sp: Path) -> tuple[int, list[str]]:
    """Strip every extension module in place; returns bytes freed and their module names."""
    freed, modules = 0, []
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for path in sorted(sp.rglob("*.so")):
        if not path.name.endswith(suffixes) or path.is_symlink():
            continue
        data = path.read_bytes()
        stripped = strip_elf(data)
        if stripped is None:
            continue
        path.write_bytes(stripped)
        freed += len(data) - len(stripped)
        rel = path.relative_to(sp)
        stem = next(rel.name[: -len(x)] for x in suffixes if rel.name.endswith(x))
        modules.append(".".join([*rel.parent.parts, stem]))
    return freed, modules


def check_imports(venv: Path, modules: list[str]) -> None:
    """Every stripped extension still loads, in the venv's own interpreter."""
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    subprocess.run([str(venv / "bin" / "python"), "-c", code, *modules], check=True)


def compile_all(sp: Path) -> int:
    """Third-party code: sourceless .pyc in place of each .py. initfetch: source + .pyc."""
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    ok = compileall.compile_dir(
        sp, quiet=2, legacy=True, invalidation_mode=mode, workers=1,
        rx=_own_package_rx(sp),
    )  # fmt: skip
    ok &= compileall.compile_dir(sp / OWN_PACKAGE, quiet=2, invalidation_mode=mode, workers=1)
    if not ok:
        raise SystemExit("slim.py: a module failed to compile")
    freed = 0
    for source in sp.rglob("*.py"):
        if source.relative_to(sp).parts[0] == OWN_PACKAGE:
            continue
        if not source.with_suffix(".pyc").is_file():
            raise SystemExit(f"slim.py: no bytecode for {source}")
        freed += remove(source)
    return freed


def _own_package_rx(sp: Path) -> re.Pattern[str]:
    return re.compile(re.escape(str(sp / OWN_PACKAGE)) + r"(/|$)")


def main(argv: list[str]) -> int:
    venv = Path(argv[1])
    sp = site_packages(venv)
    before = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    pruned = prune_unused(sp)
    stripped, modules = strip_extensions(sp)
    sources = compile_all(sp)
    check_imports(venv, modules)
    after = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    print(
        f"slim.py: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB "
        f"(pruned {pruned / 1e6:.1f} MB, symbols {stripped / 1e6:.1f} MB of {len(modules)} "
        f"extension modules, sources {sources / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

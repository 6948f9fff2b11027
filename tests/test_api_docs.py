"""Every public class, function, method and property of the public modules has a
docstring, so `help()` explains it (a method without one shows whatever comment sits
above it: `help(pyshm.Ring)` used to show a section divider as the doc of `producer`)."""

from __future__ import annotations

import importlib
import inspect
import pydoc

import pytest

PUBLIC_MODULES = [
    "pyshm", "pyshm.ring", "pyshm.layout", "pyshm.errors", "pyshm.segment", "pyshm.engine",
    "pyshm.replica", "pyshm.images", "pyshm.images.format", "pyshm.images.schedule",
    "pyshm.repair", "pyshm.stats", "pyshm.config", "pyshm.supervisor", "pyshm.udmabuf",
    "pyshm.human", "pyshm.lock", "pyshm.fallback.cpu", "pyshm.state", "pyshm.bridge",
    "pyshm.driver.engine", "pyshm.driver.ip", "pyshm.driver.sim",
]


def public_objects(modname: str):
    mod = importlib.import_module(modname)
    yield modname, mod
    names = getattr(mod, "__all__", None) or [
        n for n, o in vars(mod).items() if not n.startswith("_")
        and (inspect.isclass(o) or inspect.isfunction(o))
        and getattr(o, "__module__", None) == modname]
    for name in names:
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        yield f"{modname}.{name}", obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, property):
                    yield f"{modname}.{name}.{attr}", member
                elif isinstance(member, (staticmethod, classmethod)) or inspect.isfunction(member):
                    yield f"{modname}.{name}.{attr}", getattr(obj, attr)


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(modname):
    missing = [name for name, obj in public_objects(modname)
               if not (inspect.getdoc(obj) or "").strip()]
    assert not missing, "no docstring: " + ", ".join(missing)


def test_help_on_ring_shows_no_comment_as_documentation():
    import pyshm

    text = pydoc.render_doc(pyshm.Ring, renderer=pydoc.plaintext)
    leaked = [line for line in text.splitlines() if line.strip(" |").startswith("#")]
    assert not leaked, leaked
    assert "create=True" in text and "producer" in text  # the class doc explains use

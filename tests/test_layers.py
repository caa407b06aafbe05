"""Dependencies point one way: face → model → wire → sender / receiver → commands, with training and
audio2exp beside them. Read from the source (every import, those inside functions too), so a lazy import
that turns an arrow round fails here rather than in a cycle at run time."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("callsynth", "sender", "receiver", "twoway", "audio2exp")
COMMANDS = ["callsynth.cli", "callsynth.call_commands", "callsynth.audio_commands", "callsynth.demo"]


def _imports(path: Path) -> set[str]:
    """The project modules `path` imports, absolute names, relative imports resolved."""
    module = path.relative_to(REPO).with_suffix("").parts
    package = list(module[:-1])          # a module's package; an __init__'s is its own folder too
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
                found |= {name} if node.module else {f"{name}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


MODULES = {".".join(p.relative_to(REPO).with_suffix("").parts): _imports(p)
           for top in PACKAGES for p in (REPO / top).rglob("*.py")}

# (the modules under this prefix, may not import these)
RULES = [
    ("callsynth.face", ["callsynth.model", "callsynth.wire", "callsynth.train", "callsynth.eval", "sender",
                        "receiver", "twoway", "audio2exp"] + COMMANDS),
    ("callsynth.model", ["callsynth.wire", "callsynth.train", "callsynth.eval", "sender", "receiver", "twoway",
                         "audio2exp"] + COMMANDS),
    ("callsynth.wire", ["callsynth.train", "callsynth.eval", "sender", "receiver", "twoway", "audio2exp"] + COMMANDS),
    ("callsynth.signalling", ["sender", "receiver", "twoway"] + COMMANDS),
    ("callsynth.rtc", ["sender", "receiver", "twoway"] + COMMANDS),
    # LivePortrait's habit: inference helpers (callsynth.model.runtime) below both; training never imports
    # the receiver (it makes its samples by the sender's encoder and the face's own warp and blend)
    ("callsynth.train", ["receiver", "twoway"] + COMMANDS),
    ("sender", ["receiver", "twoway", "callsynth.train"] + COMMANDS),
    ("receiver", ["sender", "twoway", "callsynth.train"] + COMMANDS),
    ("twoway", COMMANDS),
    # audio2exp is speech → code: the talking face it drives is rendered in the command layer above
    ("audio2exp", ["sender", "receiver", "twoway", "callsynth.talking_face"] + COMMANDS),
]


def test_the_import_reader_sees_every_kind_of_import():
    """Its own check: a module-level absolute import, a relative one and one inside a function."""
    assert "callsynth.face.warp" in MODULES["receiver.renderer"]            # from callsynth.face.warp import
    assert "callsynth.face.basis" in MODULES["callsynth.face.fit_basis"]    # from .basis import
    assert "receiver.renderer" in MODULES["callsynth.eval.run"]             # inside a function
    assert len(MODULES) > 60


@pytest.mark.parametrize("prefix, banned", RULES, ids=[r[0] for r in RULES])
def test_dependencies_point_one_way(prefix, banned):
    wrong = {module: sorted(name for name in names if any(name == b or name.startswith(b + ".") for b in banned))
             for module, names in MODULES.items() if module == prefix or module.startswith(prefix + ".")}
    assert not {m: w for m, w in wrong.items() if w}

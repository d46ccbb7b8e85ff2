"""The import rules of docs/ARCHITECTURE.md, read from the source: a package that reaches
upstream (video importing the engine, the dashboard importing the model) fails here, as does
any monitor module that imports torch or training/."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MONITOR = ROOT / "monitor"

# The part of monitor/ a module belongs to -> the parts it may import (itself always allowed).
GROUND = {"video", "model", "messages"}
ALLOWED = {
    "video": set(), "model": set(), "messages": set(),
    "alerts": {"model", "messages", "config"},
    "dashboard": {"messages", "config"},
    "engine": GROUND | {"alerts", "config"},
    "capacity": GROUND | {"alerts", "config", "engine", "__init__"},
    "config": {"messages"},  # endpoints and CURVE key files, checked by the messages package's own rules
    "commands": GROUND | {"alerts", "config", "engine", "dashboard", "capacity", "__init__"},
    "cli": {"commands"},
    "__init__": set(),
    # Leaves every part may use: the one credentials rule, and how an entry point ends on an error.
    "redaction": set(), "errors": {"redaction"},
}
for _allowed in ALLOWED.values():
    _allowed.update({"redaction", "errors"})
ALLOWED["redaction"], ALLOWED["errors"] = set(), {"redaction"}


def part(module: str) -> str:
    """'monitor.video.sources' -> 'video'; 'monitor' -> '__init__'."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def modules():
    for path in sorted(MONITOR.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        yield path, ".".join(rel.parts).removesuffix(".__init__")


def test_every_monitor_package_imports_only_what_the_architecture_allows():
    wrong = []
    for path, name in modules():
        own = part(name)
        assert own in ALLOWED, f"{path}: monitor/{own} is not in docs/ARCHITECTURE.md's table"
        for target in imports(path):
            if target == "monitor" or target.startswith("monitor."):
                other = part(target)
                if other != own and other not in ALLOWED[own]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_the_monitor_never_imports_torch_or_training():
    wrong = [f"{path.relative_to(ROOT)} imports {target}" for path, _ in modules() for target in imports(path)
             if target.split(".")[0] in ("torch", "training")]
    assert not wrong, "\n".join(wrong)


def test_each_package_says_what_it_is_and_what_it_may_import():
    for package in (p for p in MONITOR.iterdir() if (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
        assert doc, f"{package}/__init__.py has no docstring"
        if package.name != "commands":
            assert "import" in doc, f"{package}/__init__.py does not say what it may import"

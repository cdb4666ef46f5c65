"""The package's architecture: one-way layers, no import cycles, small files that say what they hold."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tavt_kit")

#: lowest first; a module may import its own layer and the layers below, never one above
LAYERS = [
    ("tavt_kit", "errors", "files", "lock", "machine", "progress", "stats", "target", "validate"),
    ("schedules",),
    ("models",),
    ("data",),
    ("train",),
    ("distill", "export"),
    ("bench",),  # measures exported files: bench imports export, export never imports bench
    ("search",),
    ("report",),
    ("cli",),
    ("demo",),  # runs the commands: demo imports cli, cli never imports demo
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
MAX_LINES = 600


def _modules():
    """{module name: file path} for every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


MODULES = _modules()


def _imports(name: str, path: str):
    """The package modules ``name`` imports, at module level or inside functions alike."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            # "from pkg import sub" names a module when pkg.sub is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in MODULES and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_package_has_a_layer():
    assert {_layer(m) for m in MODULES} <= set(RANK), "add new top-level modules to LAYERS"


def test_layers_are_one_way():
    upward = [f"{m} ({_layer(m)}) imports {t} ({_layer(t)})" for m, targets in GRAPH.items() for t in targets
              if RANK[_layer(t)] > RANK[_layer(m)]]
    assert not upward, "a lower layer imports a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    # a package's __init__ re-exporting its own modules is not a cycle of ideas
    real = [c for c in cycles if not all(m.startswith(min(c, key=len) + ".") or m == min(c, key=len) for m in c)]
    assert not real, f"import cycles: {real}"


#: modules that speak the command line: the CLI, and the demo above it (it builds command lines)
COMMAND_LINE = ("tavt_kit.cli", "tavt_kit.demo")
#: a command-line flag in a message: ``--name`` at the start or after a space, bracket, quote or slash
FLAG = re.compile(r"(^|[\s(`'\"\[/])(--[a-z][a-z0-9-]*)")


def _library_modules():
    """{module: path} of every module that is not the command line (the library: it knows no flags)."""
    return {m: p for m, p in MODULES.items()
            if not any(m == c or m.startswith(c + ".") for c in COMMAND_LINE)}


def test_only_the_command_line_imports_argparse():
    found = []
    for m, path in sorted(_library_modules().items()):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == "argparse" or n.startswith("argparse.") for n in names):
                found.append(f"{m}:{node.lineno}")
    assert not found, ("argparse outside tavt_kit/cli and tavt_kit/demo.py (argument groups and Namespace "
                       "readers belong in tavt_kit/cli/):\n" + "\n".join(found))


def test_library_errors_name_parameters_not_flags():
    """A library error names the Python parameter (``subset=0: expected ...``), never a ``--flag``: the CLI
    says it as its own option (tavt_kit.cli.common.flag_message)."""
    found = []
    for m, path in sorted(_library_modules().items()):
        raises = [n for n in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)) if isinstance(n, ast.Raise)]
        for node in sorted(raises, key=lambda n: n.lineno):
            texts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            flags = sorted({f.group(2) for t in texts for f in FLAG.finditer(t)})
            if flags:
                found.append(f"{m}:{node.lineno} ({', '.join(flags)})")
    assert not found, (f"{len(found)} raise statements outside tavt_kit/cli and tavt_kit/demo.py name command-line "
                       "flags; name the parameter instead (f\"subset={subset}: expected ...\"):\n" + "\n".join(found))


def test_files_are_small_and_say_what_they_hold():
    long = {m: n for m, p in MODULES.items() if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    silent = [m for m, p in MODULES.items()
              if not (ast.get_docstring(ast.parse(open(p, encoding="utf-8").read())) or "").strip()]
    assert not silent, f"modules without a docstring saying their one idea: {silent}"


def test_help_imports_no_torch():
    code = ("import sys\nfrom tavt_kit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "import tavt_kit\nassert tavt_kit.ConfigError\n"
            "heavy = sorted(m for m in ('torch', 'timm', 'numpy', 'onnx') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
    assert "COMMAND" in out.stdout and "distill" in out.stdout


def test_public_api_names_resolve():
    import tavt_kit

    for name in tavt_kit.__all__:
        assert getattr(tavt_kit, name) is not None
    assert tavt_kit.patch is tavt_kit.models.patch_model
    with pytest.raises(AttributeError):
        tavt_kit.no_such_name


def test_every_command_has_its_own_module_and_help(capsys):
    from tavt_kit.cli import COMMANDS, command_module, main

    for name in COMMANDS:
        mod = command_module(name)
        assert callable(mod.add_arguments) and callable(mod.run), name
        assert mod.__name__ == COMMANDS[name][0]
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert f"usage: fgvc-kit {name}" in capsys.readouterr().out


#: packages whose functions stay short enough to read at once (from ``def`` to the last line, docstring included)
SHORT_FUNCTION_PACKAGES = ("search", "bench", "export", "report")
MAX_FUNCTION_LINES = 80


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, lines from ``def`` to the last line) of every function, nested ones and methods included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node.end_lineno - node.lineno + 1
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def test_no_long_functions_in_the_pipeline_packages():
    long = []
    for m, path in sorted(MODULES.items()):
        if _layer(m) not in SHORT_FUNCTION_PACKAGES:
            continue
        for name, n in _functions(ast.parse(open(path, encoding="utf-8").read(), path)):
            if n > MAX_FUNCTION_LINES:
                long.append(f"{m}:{name} ({n} lines)")
    assert not long, (f"functions over {MAX_FUNCTION_LINES} lines (split them into helpers that each do one "
                      "thing):\n" + "\n".join(long))

"""`maf completion bash|zsh`: scripts generated from the parser, tried in a real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools import required_tool
from workspace import isolated_env, maf_command

DEADLINE_S = 60


def script(tmp_path: Path, shell: str) -> str:
    made = subprocess.run(
        [*maf_command(), "completion", shell], cwd=tmp_path, capture_output=True, text=True,
        env=isolated_env(tmp_path), timeout=DEADLINE_S,
    )
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    return made.stdout


def completions(tmp_path: Path, words: list[str]) -> list[str]:
    """What bash offers for the last word of ``words``, with the script of `maf completion bash` loaded."""
    path = tmp_path / "maf.bash"
    path.write_text(script(tmp_path, "bash"))
    line = " ".join(words)
    quoted = " ".join(f"'{word}'" for word in words)
    driver = (
        f"source {path}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; COMP_POINT={len(line)}\n"
        "_shtab_maf\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    bash = required_tool("bash", "bash", "load the bash completion script")
    ran = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", driver], cwd=tmp_path, capture_output=True, text=True,
        env=isolated_env(tmp_path), timeout=DEADLINE_S,
    )
    assert ran.returncode == 0, ran.stderr
    return sorted(ran.stdout.split())


def test_bash_completes_commands_actions_and_options(tmp_path: Path) -> None:
    assert completions(tmp_path, ["maf", "ta"]) == ["task"]
    assert completions(tmp_path, ["maf", "task", "cl"]) == ["claim"]
    assert completions(tmp_path, ["maf", "task", "list", "--li"]) == ["--limit"]
    assert completions(tmp_path, ["maf", "evidence", "export", "--j"]) == ["--json"]  # not the hidden --junit
    assert completions(tmp_path, ["maf", "completion", ""]) == ["bash", "zsh"]


def test_bash_completes_file_names_where_a_file_is_taken(tmp_path: Path) -> None:
    (tmp_path / "nightly.db").write_text("")
    assert completions(tmp_path, ["maf", "db", "backup", "--output", "nigh"]) == ["nightly.db"]


def test_the_zsh_script_offers_each_command_with_its_one_line_help(tmp_path: Path) -> None:
    zsh = required_tool("zsh", "zsh", "load the zsh completion script")
    path = tmp_path / "_maf"
    path.write_text(script(tmp_path, "zsh"))
    # _describe is what shows a menu: here it prints the candidates it was given.
    driver = (
        f"autoload -U compinit; compinit -u -D -d {tmp_path / 'zcompdump'}; source {path}\n"
        "_describe() { print -rl -- ${(P)2} }\n"
        "_shtab_maf_commands; _shtab_maf_task_commands\n"
    )
    ran = subprocess.run(
        [zsh, "-f", "-c", driver], cwd=tmp_path, capture_output=True, text=True, env=isolated_env(tmp_path),
        timeout=DEADLINE_S,
    )
    assert ran.returncode == 0, ran.stderr
    offered = ran.stdout.splitlines()
    assert "task:add, claim and drive tasks" in offered
    assert "completion:print a bash or zsh completion script for maf" in offered
    assert "claim:lease the next READY task" in offered


def test_without_shtab_one_line_names_the_extra(tmp_path: Path) -> None:
    blocked = "import sys; sys.modules['shtab'] = None; from pytest_maf.cli import main; sys.exit(main(sys.argv[1:]))"
    ran = subprocess.run(
        [sys.executable, "-c", blocked, "completion", "bash"], cwd=tmp_path, capture_output=True, text=True,
        env=isolated_env(tmp_path), timeout=DEADLINE_S,
    )
    assert (ran.returncode, ran.stdout) == (2, "")
    assert ran.stderr == "maf: error: maf completion needs the shtab package: pip install 'pytest-maf[completion]'\n"


def test_an_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    ran = subprocess.run(
        [*maf_command(), "completion", "fish\x1b[2J"], cwd=tmp_path, capture_output=True, text=True,
        env=isolated_env(tmp_path), timeout=DEADLINE_S,
    )
    assert ran.returncode == 2 and ran.stdout == "" and "\x1b" not in ran.stderr
    assert "maf completion: error: argument SHELL: invalid choice" in ran.stderr


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def readme_install_line(shell: str) -> str:
    """The README's line that installs the completion of ``shell`` (the line ending in ``# SHELL``)."""
    (line,) = [line for line in README.splitlines() if line.startswith("maf completion") or line.startswith("mkdir")
               if line.rstrip().endswith(f"# {shell}")]
    return line


def new_user(tmp_path: Path) -> dict[str, str]:
    """A fresh home folder, with the installed `maf` on PATH."""
    home = tmp_path / "home"
    home.mkdir()
    env = isolated_env(home, {"PATH": os.pathsep.join([str(Path(maf_command()[0]).parent), os.environ.get("PATH", "")])})
    env.pop("ZDOTDIR", None)
    return env


def test_the_readme_bash_line_gives_a_new_interactive_bash_the_nested_commands(tmp_path: Path) -> None:
    bash = required_tool("bash", "bash", "load the bash completion script")
    env = new_user(tmp_path)
    installed = subprocess.run([bash, "--norc", "-c", readme_install_line("bash")], cwd=tmp_path, capture_output=True,
                               text=True, env=env, timeout=DEADLINE_S)
    assert installed.returncode == 0, installed.stderr
    driver = (
        "offer() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMP_LINE=\"$*\"; COMP_POINT=${#COMP_LINE};"
        " COMPREPLY=(); _shtab_maf; echo \"$*: ${COMPREPLY[*]}\"; }\n"
        "offer maf reservation ac\noffer maf db ''\n"
    )
    ran = subprocess.run([bash, "-i", "-c", driver], cwd=tmp_path, capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=DEADLINE_S)  # -i: reads ~/.bashrc, as a new terminal does
    assert ran.returncode == 0, ran.stderr
    offered = dict(line.split(": ", 1) for line in ran.stdout.splitlines())
    assert offered["maf reservation ac"] == "acquire"
    assert {"backup", "restore", "recover"} <= set(offered["maf db "].split())


def test_the_readme_zsh_line_registers_maf_with_a_new_interactive_zsh(tmp_path: Path) -> None:
    zsh = required_tool("zsh", "zsh", "load the zsh completion script")
    env = new_user(tmp_path)
    installed = subprocess.run([zsh, "-f", "-c", readme_install_line("zsh")], cwd=tmp_path, capture_output=True,
                               text=True, env=env, timeout=DEADLINE_S)
    assert installed.returncode == 0, installed.stderr
    ran = subprocess.run([zsh, "-i", "-c", "print -r -- maf=$_comps[maf]"], cwd=tmp_path, capture_output=True,
                         text=True, env=env, stdin=subprocess.DEVNULL, timeout=DEADLINE_S)  # -i: reads ~/.zshrc
    assert "maf=_maf" in ran.stdout.splitlines(), (ran.stdout, ran.stderr)

"""``tbpipe completion bash|zsh``: print a shell completion script for ``tbpipe``.

The script is made from the parser itself, so it always names the sub-commands, their
flags and the allowed values of flags with a fixed set (``--finetune auto|always|never``).
Install: ``eval "$(tbpipe completion bash)"`` in ``~/.bashrc`` (or ``zsh``, ``~/.zshrc``).
"""

from __future__ import annotations

import argparse
import functools
import shlex
from collections.abc import Mapping

SHELLS = ("bash", "zsh")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``completion``."""
    cmd = subparsers.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description="Print a completion script for tbpipe. Bash: add "
                    "'eval \"$(tbpipe completion bash)\"' to ~/.bashrc; zsh: "
                    "'eval \"$(tbpipe completion zsh)\"' to ~/.zshrc.")
    cmd.add_argument("shell", choices=SHELLS, help="bash or zsh")
    # ``subparsers.choices`` holds every sub-command once the parser is built, this one too:
    # the script is made from it, so this module needs nothing from the one that builds it.
    cmd.set_defaults(handler=functools.partial(run_completion, subparsers.choices))


def run_completion(commands: Mapping[str, argparse.ArgumentParser],
                   args: argparse.Namespace) -> int:
    """Print the script for ``args.shell``, for the sub-commands ``commands``."""
    print(completion_script(commands, args.shell))
    return 0


def allowed_values(action: argparse.Action) -> tuple[str, ...]:
    """A flag's allowed values: its choices, or a ``a|b|c`` metavar (checked by a config)."""
    if action.choices:
        return tuple(str(c) for c in action.choices)
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    return tuple(metavar.split("|")) if "|" in metavar else ()


def command_table(commands: Mapping[str, argparse.ArgumentParser],
                  ) -> dict[str, dict[str, tuple[str, ...]]]:
    """``{sub-command: {flag: allowed values (empty: any)}}`` of the sub-commands' parsers.

    argparse has no public way to list a parser's arguments; its ``_actions`` lists (stable
    since Python 2.7) are read here and nowhere else, and a parser without them gives no
    flags (the script then completes file names only).
    """
    table: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, sub in commands.items():
        flags: dict[str, tuple[str, ...]] = {}
        for option in getattr(sub, "_actions", ()):
            if not option.option_strings and option.choices and "" not in flags:
                flags[""] = allowed_values(option)  # a positional with fixed values
            for flag in option.option_strings:
                if flag.startswith("--"):
                    flags[flag] = allowed_values(option)
        table[name] = flags
    return table


def completion_script(commands: Mapping[str, argparse.ArgumentParser], shell: str) -> str:
    """A bash completion function for ``tbpipe`` (zsh loads it through bashcompinit).

    ``commands``: the sub-commands' parsers by name (``subparsers.choices``).
    """
    table = command_table(commands)
    cases = []
    for name, flags in table.items():
        words = " ".join(flag for flag in flags if flag)
        value_cases = "".join(
            f"                {flag}) COMPREPLY=($(compgen -W {shlex.quote(' '.join(values))} "
            f'-- "$cur")); return;;\n'
            for flag, values in flags.items() if flag and values)
        positional = " ".join(flags.get("", ()))
        cases.append(
            f"        {name})\n"
            f'            case "$prev" in\n{value_cases}'
            f"            esac\n"
            f"            COMPREPLY=($(compgen -W {shlex.quote(words + ' ' + positional)} "
            f'-- "$cur"));;\n')
    script = (
        "# tbpipe completion (tbpipe completion bash|zsh)\n"
        "_tbpipe() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"\n'
        "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
        f"        COMPREPLY=($(compgen -W {shlex.quote(' '.join(table) + ' --help --version')} "
        '-- "$cur")); return\n'
        "    fi\n"
        '    case "${COMP_WORDS[1]}" in\n'
        + "".join(cases) +
        "    esac\n"
        "}\n"
        "complete -o default -F _tbpipe tbpipe\n")
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script

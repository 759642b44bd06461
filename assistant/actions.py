"""Every action of the app, once: keys, the F1 help and the command palette all read this table.

Each action is a Textual binding with an id, so `[keys]` in config.toml can rebind it (Textual's keymap:
binding id → keys). The keymap is validated when the app starts: an unknown action, a key Textual cannot
name, or two actions of one screen on one key is one sentence, and the app does not start.
"""

from __future__ import annotations

import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from textual.binding import Binding
from textual.keys import Keys
from textual.widgets import TextArea

from ingest.errors import ConfigError

APP, CHAT, FOLDERS, BANK, SOURCES = "app", "chat", "folders", "bank", "sources"


@dataclass(frozen=True)
class Action:
    id: str  # the binding id: what [keys] in config.toml names
    keys: str  # Textual key names, comma-separated
    action: str  # the Textual action it runs, on its scope's screen (or the app)
    title: str  # in the palette, the footer and the help
    help: str
    scope: str = APP  # where the key works: the app, or one screen (or the sources panel)
    footer: bool = True


ACTIONS: tuple[Action, ...] = (
    Action("help", "f1", "app.help", "Help", "Show the keys and what they do."),
    Action("quit", "ctrl+q", "app.quit", "Quit", "Quit the app (the engine keeps its memories)."),
    Action("chat", "f2", "app.switch_mode('chat')", "Chat", "Chat with your files.", footer=False),
    Action(
        "folders",
        "f3",
        "app.switch_mode('folders')",
        "Folders",
        "Watched folders and their progress.",
        footer=False,
    ),
    Action(
        "bank",
        "f4",
        "app.switch_mode('bank')",
        "Bank",
        "The memory bank: size, profile, budget.",
        footer=False,
    ),
    Action("new_chat", "ctrl+n", "new_chat", "New chat", "Start a new chat.", CHAT),
    Action("chats", "ctrl+l", "chats", "Chats", "List and search your chats; Enter opens one.", CHAT, False),
    Action("mode", "ctrl+t", "cycle_mode", "Mode", "Switch the answer mode: memory, rag, none.", CHAT),
    Action(
        "compare",
        "ctrl+b",
        "compare",
        "Compare",
        "Ask the last question again in the next mode, beside the first answer.",
        CHAT,
    ),
    Action("stop", "escape", "stop", "Stop", "Stop the answer being written (what was written stays).", CHAT),
    Action(
        "reads",
        "ctrl+g",
        "reads",
        "Reads",
        "The memories the model read at each 64-token step, with their scores.",
        CHAT,
    ),
    Action("rename", "ctrl+r", "rename_chat", "Rename", "Rename this chat.", CHAT, footer=False),
    Action("delete_chat", "f8", "delete_chat", "Delete chat", "Delete this chat.", CHAT, footer=False),
    Action(
        "export", "ctrl+o", "export_chat", "Export", "Save this chat as Markdown with footnotes.", CHAT, False
    ),
    Action("copy", "f5", "copy_answer", "Copy", "Copy the selected answer (OSC 52).", CHAT, False),
    Action("sources", "ctrl+s", "focus_sources", "Sources", "Move to the sources panel.", CHAT, False),
    Action("passage", "enter", "passage", "Passage", "Show the passage in its document.", SOURCES),
    Action("open", "o", "open_source", "Open", "Open the file at that line in $EDITOR.", SOURCES),
    Action("add_folder", "a", "add_folder", "Add folder", "Watch a folder.", FOLDERS),
    Action(
        "remove_folder",
        "x",
        "remove_folder",
        "Remove",
        "Stop watching the selected folder (or remove an imported collection).",
        FOLDERS,
    ),
    Action("rescan", "s", "rescan", "Rescan", "Scan the selected folder (all when none) again.", FOLDERS),
    Action("retry", "r", "retry", "Retry file", "Parse the selected failed file again.", FOLDERS),
    Action("refresh_bank", "r", "refresh", "Refresh", "Read the bank's statistics again.", BANK),
    Action("export_bank", "e", "export_bank", "Export", "Write the bank to a file (a .m3bank).", BANK),
    Action(
        "import_bank",
        "i",
        "import_bank",
        "Import",
        "Check a bank file, show what it would change, then import it.",
        BANK,
    ),
    Action("cancel_bank", "escape", "cancel_bank", "Cancel", "Cancel the export or import running.", BANK),
)


NAVIGATION = ("chat", "folders", "bank")  # F2-F4: in the footer of the screens with room for them


def bindings(scope: str) -> list[Binding]:
    """The bindings of one scope, for a `BINDINGS` class variable (the folders and bank screens also
    show the keys that move between screens, which the chat's full footer leaves to F1)."""
    shown = [a for a in ACTIONS if a.scope == scope]
    if scope in (FOLDERS, BANK):
        shown += [a for a in ACTIONS if a.id in NAVIGATION and a.id != scope]  # not the screen's own
    return [
        Binding(
            a.keys,
            a.action,
            a.title,
            show=a.footer or a.scope != scope,
            id=a.id,
            priority=a.scope == APP,
        )
        for a in shown
    ]


def load_keymap(path: Path) -> dict[str, str]:
    """The `[keys]` table of config.toml (action id → keys), checked; {} without a file or table.
    ConfigError with one sentence for an unknown action, a key that is no key, or a clash."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f).get("keys", {})
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}).") from exc
    return check_keymap(table, path)


def check_keymap(table: Mapping[str, object], where: Path | str) -> dict[str, str]:
    known = {a.id: a for a in ACTIONS}
    keymap: dict[str, str] = {}
    for action_id, keys in table.items():
        if action_id not in known:
            raise ConfigError(f"{where}: [keys] has no action '{action_id}' (known: {', '.join(known)}).")
        if not isinstance(keys, str) or not keys.strip():
            raise ConfigError(f'{where}: [keys] {action_id} must be a key such as "ctrl+n", not {keys!r}.')
        for key in keys.split(","):
            if not is_key(key.strip()):
                raise ConfigError(f"{where}: [keys] {action_id}: {key.strip()!r} is not a key Textual knows.")
        keymap[action_id] = ",".join(k.strip() for k in keys.split(","))
    _check_clashes(keymap, where)
    return keymap


MODIFIERS = frozenset({"ctrl", "shift", "alt", "super", "meta", "hyper"})
# Key names Textual uses: its Keys ("f1", "escape", "pageup", ...) and printable characters' Unicode names
# ("question_mark", "full_stop"), besides single characters.
KEY_NAMES = frozenset(
    {k.value.split("+")[-1] for k in Keys}
    | {unicodedata.name(chr(c)).lower().replace(" ", "_").replace("-", "_") for c in range(33, 127)}
    | {"space"}
)


def is_key(key: str) -> bool:
    """Whether Textual can name `key`: modifiers joined by '+', then one character or key name."""
    *mods, base = key.split("+") if len(key) > 1 else [key]
    return bool(base) and set(mods) <= MODIFIERS and (len(base) == 1 or base in KEY_NAMES)


def types(key: str) -> bool:
    """Whether `key` is one a text box takes as typing: a printable character with shift at most."""
    *mods, base = key.split("+") if len(key) > 1 else [key]
    printable = len(base) == 1 or base == "space" or base in KEY_NAMES - {k.value for k in Keys}
    return printable and set(mods) <= {"shift"}


def effective_keys(keymap: Mapping[str, str]) -> dict[str, set[str]]:
    """Each action's keys once the keymap applies."""
    return {a.id: set(keymap.get(a.id, a.keys).split(",")) for a in ACTIONS}


def _composer_keys() -> dict[str, str]:
    """The keys the chat's text box keeps for editing (Textual's TextArea: ctrl+k, ctrl+w, ...)."""
    return {key: b.action for b in TextArea.BINDINGS if isinstance(b, Binding) for key in b.key.split(",")}


def _check_clashes(keymap: Mapping[str, str], where: Path | str) -> None:
    """Two actions that can act at once (one scope, or one of them app-wide) must not share a key once
    the user rebinds one of them, and a chat action must not take a key the text box edits with (the
    defaults are chosen not to clash)."""
    keys = effective_keys(keymap)
    editing = _composer_keys()
    for action_id in keymap:
        if next(a for a in ACTIONS if a.id == action_id).scope not in (CHAT, APP):
            continue
        taken = sorted(k for k in keys[action_id] if k in editing)
        if taken:
            raise ConfigError(
                f"{where}: [keys] {action_id}: {taken[0]!r} is the text box's key for {editing[taken[0]]}."
            )
        typed = sorted(k for k in keys[action_id] if types(k))
        if typed:
            raise ConfigError(
                f"{where}: [keys] {action_id}: {typed[0]!r} would type into the question box; "
                "choose a key with ctrl or alt, or a function key."
            )
    for i, a in enumerate(ACTIONS):
        for b in ACTIONS[i + 1 :]:
            together = (
                a.scope == b.scope or APP in (a.scope, b.scope) or {a.scope, b.scope} == {CHAT, SOURCES}
            )
            shared = keys[a.id] & keys[b.id]
            if together and shared and (a.id in keymap or b.id in keymap):
                raise ConfigError(f"{where}: [keys] {a.id} and {b.id} would both be {min(shared)!r}.")

"""The memory3 app: chat with your files, see every source, manage folders and the bank.

A client of the engine service (engine/service/client.py), like the `m3` command: it starts the service
when none answers and talks to it from worker threads, so the first frame appears at once and no key
waits for the engine. Screens are Textual modes (chat, folders, bank); every key comes from one action
table (assistant/actions.py) that also feeds the F1 help and the command palette.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import get_current_worker

from assistant import actions
from assistant.messages import EngineDown, EngineReady, EngineWaiting, StatusChanged
from assistant.screens.chat import ChatScreen
from assistant.screens.help import HelpScreen
from assistant.screens.problem import ProblemScreen
from assistant.settings import Settings
from engine.service import client as service
from engine.service.client import Client, Health, ServiceError, ServiceUnreachable
from ingest.paths import Home

STATUS_EVERY_S = 2.0
QUIT_WAIT_S = 2.0  # for the engine to take a stop on the way out


def _folders() -> Screen:
    """The folders screen, imported when first shown: the first frame comes sooner."""
    from assistant.screens.folders import FoldersScreen

    return FoldersScreen()


def _bank() -> Screen:
    from assistant.screens.bank import BankScreen

    return BankScreen()


class M3App(App):
    """memory3: `M3App(home).run()`; `model`/`device` as for `m3 --model/--device`."""

    TITLE = "memory3"
    CSS_PATH = "app.tcss"
    MODES = {"chat": ChatScreen, "folders": _folders, "bank": _bank}
    DEFAULT_MODE = "chat"
    BINDINGS = actions.bindings(actions.APP)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    engine: reactive[str] = reactive("starting the engine…")  # what the status bar says of the engine
    ready: reactive[bool] = reactive(False)
    latest: reactive[StatusChanged | None] = reactive(None, always_update=True)  # the last status reading

    def __init__(
        self,
        home: Home,
        model: str | None = None,
        device: str | None = None,
        keymap: dict[str, str] | None = None,
        theme: str | None = None,
    ):
        super().__init__()
        if theme:
            self.theme = theme
        self.home, self.model_path, self.device = home, model, device
        self.client: Client | None = None
        self.health: Health | None = None
        self.answering: set[str] = set()  # ids of the answers streaming now
        self._polling = False  # a status reading is on its way
        if keymap:
            self.set_keymap(keymap)

    def on_mount(self) -> None:
        self.connect()
        self.set_interval(STATUS_EVERY_S, self.poll_status)

    # the engine

    @work(thread=True, exclusive=True, group="connect")
    def connect(self) -> None:
        """Reach the service (starting it if none runs) and wait until its model is loaded. The client of
        a lost engine is closed only once the new one is in place (workers may still hold it)."""
        worker = get_current_worker()
        said: list[str] = []

        def waiting(what: str) -> None:
            if worker.is_cancelled:  # the app is closing: stop waiting for a model to load
                raise ServiceError("The app closed while the engine started.")
            if said != [what]:
                said[:] = [what]
                self.post_message(EngineWaiting(what))

        try:
            client = service.connect_or_start(self.home, self.model_path, self.device, waiting)
        except ServiceError as exc:
            self.post_message(EngineDown(str(exc)))
            return
        try:
            health = client.health()
        except ServiceError as exc:
            client.close()
            self.post_message(EngineDown(str(exc)))
            return
        old, self.client = self.client, client
        if old is not None:
            old.close()
        self.post_message(EngineReady(health))

    def on_engine_waiting(self, message: EngineWaiting) -> None:
        self.engine, self.ready = message.what, False

    def on_engine_ready(self, message: EngineReady) -> None:
        self.health, self.ready = message.health, True
        self.engine = "ready"
        if isinstance(self.screen, ProblemScreen):
            self.screen.dismiss()
        self.poll_status()

    def on_engine_down(self, message: EngineDown) -> None:
        self.ready = False
        self.engine = "down"
        if isinstance(self.screen, ProblemScreen):
            self.screen.explain(message.sentence)
        else:
            self.push_screen(ProblemScreen(message.sentence, self.home.log_file), self._after_problem)

    def _after_problem(self, retry: bool | None) -> None:
        if retry:
            self.engine = "starting the engine…"
            self.connect()

    def lost(self, exc: ServiceError) -> None:
        """A worker's request failed: an unreachable engine is a problem screen, anything else a notice.
        For worker threads (posting and notify are thread-safe)."""
        if isinstance(exc, ServiceUnreachable):
            self.post_message(EngineDown(str(exc)))
        else:
            self.notify(str(exc), severity="error", timeout=8, markup=False)

    def engine_client(self) -> Client:
        """The ready engine's client, for a worker. ServiceError (which workers catch) while the engine
        starts or is down."""
        client = self.client
        if client is None or not self.ready:
            raise ServiceError("The engine is not ready yet; this works once the status bar says ready.")
        return client

    def poll_status(self) -> None:
        """Every couple of seconds; a reading still waiting on a slow engine is not joined by another."""
        if not self._polling:
            self._polling = True
            self._read_status()

    @work(thread=True, group="status")
    def _read_status(self) -> None:
        try:
            client = self.engine_client()
            self.post_message(StatusChanged(client.status(), client.bank_stats()))
        except ServiceError as exc:
            if self.ready:
                self.lost(exc)
        finally:
            self._polling = False

    def on_status_changed(self, message: StatusChanged) -> None:
        self.latest = message
        for screen in self.screen_stack:
            screen.post_message(StatusChanged(message.status, message.bank))

    # everywhere

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette: every action of the app and of the screen in front, then Textual's own."""
        scopes = {actions.APP, getattr(screen, "SCOPE", None), *getattr(screen, "INNER_SCOPES", ())}
        for action in actions.ACTIONS:
            if action.scope in scopes:
                yield SystemCommand(action.title, action.help, self._runner(action, screen))
        yield from super().get_system_commands(screen)

    def _runner(self, action: actions.Action, screen: Screen) -> Any:
        async def run() -> None:
            await self.run_action(action.action, screen if action.scope != actions.APP else self)

        return run

    def action_quit(self) -> None:
        """Answers still streaming are stopped first (saved, marked stopped), as Ctrl-C does in `m3 ask`;
        the engine service goes on."""
        if self.client is not None and self.answering:
            self._stop_answers_and_exit(self.client, list(self.answering))
        else:
            self.exit()

    @work(thread=True, group="quit")
    def _stop_answers_and_exit(self, client: Client, answer_ids: list[str]) -> None:
        for answer_id in answer_ids:
            try:
                client.cancel(answer_id, timeout=QUIT_WAIT_S)
            except ServiceError:
                break  # the engine is gone or stuck: nothing more to ask it
        self.call_from_thread(self.exit)

    def keys_of(self, action_id: str) -> str:
        """The keys an action has now (after config.toml's [keys]), for help texts."""
        return ", ".join(sorted(actions.effective_keys(self._keymap)[action_id]))


def run(home: Home, model: str | None = None, device: str | None = None) -> int:
    """Open the app (what `m3` with no command does); its exit status (1 after a crash, whose traceback
    Textual has shown). ConfigError for a bad [app] or [keys] table."""
    settings = Settings.load(home.config_file)
    app = M3App(home, model, device, settings.keymap, settings.theme)
    try:
        app.run()
    finally:  # after the workers have ended: closing the client under them would fail their requests
        if app.client is not None:
            app.client.close()
    return app.return_code or 0

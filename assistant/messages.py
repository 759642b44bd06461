"""The app's own messages, in one place: what workers (threads talking to the engine service) tell the
screens and widgets. Textual delivers them on the UI thread, so handlers may touch widgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from engine.service.client import Citation, Event, Folder, Health, Read, ServiceError, Status


@dataclass
class EngineWaiting(Message):
    """The service is starting or loading its model; `what` says which ("loading the model…")."""

    what: str


@dataclass
class EngineReady(Message, bubble=False):
    """The engine's model is loaded; posted to the app."""

    health: Health


@dataclass
class EngineDown(Message):
    """The engine cannot be reached or failed to start: `sentence` says what happened."""

    sentence: str


@dataclass
class StatusChanged(Message, bubble=False):
    """A fresh reading of the service's status and bank statistics (every couple of seconds), sent on to
    every screen."""

    status: Status
    bank: dict[str, Any]


@dataclass
class AnswerPiece(Message):
    """A piece of an answer's text, for the answer view it is posted to."""

    text: str


@dataclass
class AnswerWithdrawn(Message):
    """The memory answer shown so far named `names`, which none of its sources says: it is taken back and
    the pieces that follow are the answer read again from text."""

    names: list[str]


@dataclass
class AnswerStarted(Message):
    """The engine took the question: `answer_id` is the handle that stops it."""

    answer_id: str


@dataclass
class AnswerFinished(Message):
    """The answer ended: its whole text, citations and reads, or the error that ended it."""

    text: str
    citations: list[Citation]
    reads: list[Read]
    stopped: bool
    error: str | None = None


@dataclass
class FoldersRead(Message):
    folders: list[Folder]


@dataclass
class ScanStep(Message):
    event: Event


class ScanEnded(Message):
    """The scan's stream ended (done, refused or broken): the status readings take over."""


@dataclass
class BankStep(Message):
    """A bank export, inspection or import moved on (a `BankProgress` event)."""

    event: Event


@dataclass
class BankEnded(Message):
    """A bank stream ended: `job` (export, inspect, import) on `path`, with its final event, or the error
    that ended it, or neither when it was cancelled."""

    job: str
    path: str
    result: Event | None
    error: ServiceError | None

"""{{name}}: a wasmsocket plugin. It answers every text message with
`NAME #N: TEXT`, counts messages in host-kept `state` (which survives
reloads and new instances), and writes a `log` line for each."""

from wit_world import exports
from wit_world.imports import connections, log, state
from wit_world.imports.types import (
    CloseFrame,
    Message,
    Message_Text,
    OpenResponse,
    OpenResponse_Accept,
    Request,
)


def count(conn: str) -> int:
    saved = state.get(conn)
    n = int(saved.decode()) + 1 if saved else 1
    state.set(conn, str(n).encode())
    return n


class Handler(exports.Handler):
    def on_open(self, id: str, request: Request) -> OpenResponse:
        log.log(log.Level.INFO, f"{id} opened {request.path}")
        return OpenResponse_Accept(None)

    def on_message(self, id: str, message: Message) -> None:
        n = count(id)
        if isinstance(message, Message_Text):
            log.log(log.Level.INFO, f"message {n}: {message.value}")
            message = Message_Text(f"{{name}} #{n}: {message.value}")
        connections.send(id, message)

    def on_close(self, id: str, close: CloseFrame | None) -> None:
        log.log(log.Level.INFO, f"{id} closed")

    # Timers this plugin set with the `timers` interface; it sets none.
    def on_timer(self, id: str, name: str) -> None:
        pass

    def on_room_timer(self, room: str, name: str) -> None:
        pass

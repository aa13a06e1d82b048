"""Mail servers on loopback for the tests of mail outages: Django's real SMTP backend
talks to them over real sockets.

`SmtpServer` speaks enough SMTP to take messages (or refuse some recipients with a
550); while it is stopped its port is closed, so a connection is refused. A
`HangingServer` accepts connections and never says a word, as a mail server stuck
behind a full disk or a dead upstream does.
"""

import socket
import socketserver
import threading
from email import message_from_bytes
from email.message import Message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Session(socketserver.StreamRequestHandler):
    server: "_Listener"

    def handle(self) -> None:
        self._reply("220 test mail server ready")
        recipients: list[str] = []
        while line := self.rfile.readline():
            verb = line.decode().split(" ", 1)[0].strip().upper()
            if verb in ("MAIL", "RSET"):
                recipients = []
                self._reply("250 OK")
            elif verb in ("EHLO", "HELO", "NOOP"):
                self._reply("250 OK")
            elif verb == "RCPT":
                address = line.decode().split(":", 1)[1].strip().strip("<>")
                if address in self.server.owner.refused:
                    self._reply(f"550 5.1.1 <{address}>: mailbox unavailable")
                else:
                    recipients.append(address)
                    self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with <CRLF>.<CRLF>")
                self.server.owner.received.append(self._message())
                self._reply("250 queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            else:
                self._reply("502 not implemented")

    def _message(self) -> Message:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return message_from_bytes(b"".join(lines))

    def _reply(self, text: str) -> None:
        self.wfile.write(f"{text}\r\n".encode())


class _Listener(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    owner: "SmtpServer"


class SmtpServer:
    """A mail server on a port of its own, started and stopped at will."""

    def __init__(self, *, refused: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.refused = set(refused)
        self.received: list[Message] = []
        self._listener: _Listener | None = None

    def start(self) -> None:
        self._listener = _Listener(("127.0.0.1", self.port), _Session)
        self._listener.owner = self
        threading.Thread(target=self._listener.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.shutdown()
            self._listener.server_close()
            self._listener = None


class HangingServer:
    """Accepts every connection, counts it, and never answers."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _address = self._socket.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)

    def close(self) -> None:
        self._socket.close()
        for connection in self.connections:
            connection.close()

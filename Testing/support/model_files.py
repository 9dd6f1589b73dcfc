"""Real model files for the model store tests, and a loopback HTTP server that honours ``Range`` (or not) and can
cut a response off midway.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from RegSegLib.models.manifest import InputContract, ModelEntry, file_sha256

METRICS = {"dice_mean": 0.8125, "hd95_mm": 3.5, "folding_percent": 0.016, "seconds": 2.7}


def state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small real state dict (a 4 -> 3 linear layer and a 3x3x3 convolution)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "linear.weight": torch.randn(3, 4, generator=generator),
        "linear.bias": torch.tensor([0.5, -1.0, 2.0]),
        "conv.weight": torch.randn(2, 1, 3, 3, 3, generator=generator),
    }


def entry_for(path: Path, name: str, task: str = "affine", url: str | None = None) -> ModelEntry:
    """The manifest entry of the weights file ``path`` (its real size and sha256)."""
    return ModelEntry(
        name=name,
        task=task,
        version="1.2.0",
        file=path.name,
        sha256=file_sha256(path),
        size=path.stat().st_size,
        licence="CC-BY-4.0",
        training_data="synthetic tensors written by the RegSeg tests",
        budget="CPU, under a second",
        reproduce="python -m pytest Testing/lib/test_models.py",
        input=InputContract(channels=1, normalisation="z-score", spacing_mm=(2.0, 2.0, 2.0), shape=None),
        metrics=METRICS,
        url=url,
    )


def write_model(folder: Path, name: str, task: str = "affine", seed: int = 0, sidecar: bool = True) -> tuple[Path, ModelEntry]:
    """``folder/NAME.pt`` (a state dict saved by ``torch.save``) and, when ``sidecar``, ``folder/NAME.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    torch.save(state_dict(seed), weights)
    entry = entry_for(weights, name, task)
    if sidecar:
        (folder / f"{name}.json").write_text(json.dumps(entry.to_dict(), indent=2))
    return weights, entry


def flip_byte(path: Path, index: int) -> None:
    """Changes one byte of a file in place (same size, other sha256)."""
    data = bytearray(path.read_bytes())
    data[index] ^= 0xFF
    path.write_bytes(bytes(data))


class RangeServer:
    """An HTTP server on 127.0.0.1 (a free port) serving ``files`` (URL path -> bytes) from a thread.

    Attributes:
        ranges: the ``Range`` header of every GET (``None`` when absent), in order.
        cut_after: when set, the next response sends only this many body bytes and closes the connection.
        honour_range: when false, ``Range`` is ignored and the whole file is sent with status 200.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.ranges: list[str | None] = []
        self.cut_after: int | None = None
        self.honour_range = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        """The loopback URL of ``path``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = server.files.get(self.path)
                header = self.headers.get("Range")
                server.ranges.append(header)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if header and server.honour_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", header).group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                body = data[start:]
                self.send_response(206 if header and server.honour_range else 200)
                if header and server.honour_range:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut, server.cut_after = server.cut_after, None
                self.wfile.write(body if cut is None else body[:cut])

            def log_message(self, *args) -> None:
                pass

        return Handler

    def __enter__(self) -> "RangeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

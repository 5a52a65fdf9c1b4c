"""Start a real ComfyUI on CPU with this pack in its custom_nodes, and talk to its HTTP/websocket API.

Used by the ``tests/test_comfyui_real_*.py`` tests, which skip unless ``COMFYUI_DIR`` names a
ComfyUI checkout whose requirements are installed in the test interpreter (see README, "testing
against a real ComfyUI"). Everything ComfyUI writes (models, input, output, user, temp) goes to a
scratch base directory; the checkout itself is only read.

    server = ComfyUIServer(os.environ["COMFYUI_DIR"], base_dir)
    with server:
        prompt_id, messages = server.run(api_prompt)
        outputs = server.history(prompt_id)["outputs"]

or, in a test module, ``comfyui = comfyui_fixture()`` gives a module-wide started server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER = "vdit_easyanimate"          # the pack's folder name inside custom_nodes
COMFYUI_DIR_ENV = "COMFYUI_DIR"


class PromptRejected(Exception):
    """POST /prompt answered 400: ``self.body`` holds ComfyUI's error and node_errors."""

    def __init__(self, body: dict):
        super().__init__(json.dumps(body)[:2000])
        self.body = body


# The stand-in's files. ComfyUI imports torchvision at startup but uses it only inside model
# families the tests never run; transformers, once it finds a torchvision, imports these names at
# import time (the CLIP image encoder loads through it).
_TORCHVISION_STUB = {
    "__init__.py": "__version__ = '0.28.0'\nfrom . import io, models, transforms\n",
    "io.py": "",
    "models.py": "",
    "transforms/__init__.py": (
        "import enum\nfrom . import functional, v2\n\n\nclass InterpolationMode(enum.Enum):\n"
        "    NEAREST = 'nearest'\n    BILINEAR = 'bilinear'\n    BICUBIC = 'bicubic'\n    BOX = 'box'\n"
        "    HAMMING = 'hamming'\n    LANCZOS = 'lanczos'\n    NEAREST_EXACT = 'nearest-exact'\n"),
    "transforms/functional.py": "def pil_to_tensor(picture):\n    raise NotImplementedError\n",
    "transforms/v2/__init__.py": "from . import functional\n",
    "transforms/v2/functional.py": "",
}


def torchvision_stub(directory: Path) -> Path | None:
    """A do-nothing ``torchvision`` package for interpreters without one (the CPU torch build has
    no matching torchvision). Returns the folder to put on PYTHONPATH, or None if torchvision
    exists."""
    if importlib.util.find_spec("torchvision") is not None:
        return None
    for name, text in _TORCHVISION_STUB.items():
        path = directory / "torchvision" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def child_env(scratch: Path) -> dict:
    """Environment for a child process that imports ComfyUI: torchvision stub on PYTHONPATH."""
    env = dict(os.environ)
    stub = torchvision_stub(scratch / "stubs")
    if stub is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(stub), env.get("PYTHONPATH", "")) if p)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyUIServer:
    """One ComfyUI process: ``start()``, the API helpers, ``stop()`` (also a context manager)."""

    def __init__(self, comfy_dir, base_dir, pack_dir=REPO_ROOT, extra_args=(), startup_timeout=300):
        self.comfy_dir = Path(comfy_dir).resolve()
        self.base_dir = Path(base_dir).resolve()
        self.pack_dir = Path(pack_dir).resolve()
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.port = None
        self.process = None
        self.log_path = self.base_dir / "comfyui.log"
        self._log = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ComfyUIServer:
        for folder in ("custom_nodes", "models", "input", "output"):
            (self.base_dir / folder).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_FOLDER
        if not link.exists():
            # A link, not a copy: the tests exercise the working tree as it is, and ComfyUI only
            # imports the folder's __init__.py, so untracked files (venvs, caches) do not matter.
            link.symlink_to(self.pack_dir, target_is_directory=True)
        self.port = _free_port()
        command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(self.base_dir),
                   *self.extra_args]
        self._log = open(self.log_path, "w")  # noqa: SIM115  (the server's log for its lifetime; stop() closes it)
        # cwd is the checkout: main.py imports its siblings (nodes.py, execution.py) by name.
        self.process = subprocess.Popen(command, cwd=self.comfy_dir, env=child_env(self.base_dir),
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode} during startup:\n"
                                   f"{self.log_tail()}")
            try:
                self.get_json("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {self.startup_timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    # -- HTTP -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _request(self, path: str, body=None, timeout: float = 60) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def get_json(self, path: str):
        return json.loads(self._request(path, timeout=5 if path == "/system_stats" else 60))

    def object_info(self, node_id: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_id)}" if node_id else ""))

    def queue_prompt(self, prompt: dict, client_id: str | None = None, extra_data: dict | None = None) -> str:
        """Queue an API-format graph; returns its prompt_id (PromptRejected on a 400)."""
        body = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            return json.loads(self._request("/prompt", body))["prompt_id"]
        except urllib.error.HTTPError as error:
            if error.code == 400:
                raise PromptRejected(json.loads(error.read())) from None
            raise

    def run(self, prompt: dict, timeout: float = 300, extra_data: dict | None = None):
        """Queue ``prompt`` and collect its websocket messages until ComfyUI reports the end
        (``executing`` with node None). Returns (prompt_id, messages): JSON messages as dicts,
        binary frames (previews) as bytes."""
        import websocket  # websocket-client, a test dependency

        client_id = uuid.uuid4().hex
        ws = websocket.WebSocket()
        ws.connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=30)
        try:
            prompt_id = self.queue_prompt(prompt, client_id, extra_data)
            messages, deadline = [], time.monotonic() + timeout
            while True:
                ws.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    frame = ws.recv()
                except websocket.WebSocketTimeoutException:
                    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s; "
                                       f"last messages: {messages[-5:]}") from None
                if isinstance(frame, bytes):
                    messages.append(frame)
                    continue
                message = json.loads(frame)
                messages.append(message)
                data = message.get("data", {})
                if (message["type"] == "executing" and data.get("node") is None
                        and data.get("prompt_id") == prompt_id):
                    return prompt_id, messages
        finally:
            ws.close()

    def history(self, prompt_id: str) -> dict:
        return self.get_json(f"/history/{prompt_id}")[prompt_id]

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self._request(f"/view?{query}")

    def interrupt(self) -> None:
        """POST /interrupt; when it returns, the server has raised its interrupt flag."""
        self._request("/interrupt", {})

    def log_entries(self) -> list[dict]:
        """The server's recent log lines with their (local wall-clock) times, [{"t": iso, "m": text}];
        [] from a ComfyUI without GET /internal/logs/raw."""
        try:
            return self.get_json("/internal/logs/raw")["entries"]
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise

    def clear_queue(self) -> None:
        """POST /queue {"clear": true}: drop the pending (not the running) prompts. ComfyUI then
        broadcasts a ``status`` message even when nothing was pending."""
        self._request("/queue", {"clear": True})

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self._request("/free", {"unload_models": unload_models, "free_memory": free_memory})


def comfyui_fixture(scope: str = "module", **server_kwargs):
    """A pytest fixture giving a started :class:`ComfyUIServer`; skips when COMFYUI_DIR is unset.
    Use as ``comfyui = comfyui_fixture()`` in a test module."""
    import pytest

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory):
        comfy_dir = os.environ.get(COMFYUI_DIR_ENV)
        if not comfy_dir:
            pytest.skip(f"set {COMFYUI_DIR_ENV} to a ComfyUI checkout to run the real-host tests")
        server = ComfyUIServer(comfy_dir, tmp_path_factory.mktemp("comfyui"), **server_kwargs)
        server.start()
        yield server
        server.stop()

    return fixture
